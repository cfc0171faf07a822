"""Whole-slide images: reading (OpenSlide / tiffslide), tissue detection, tiling, lazy tile datasets, embedding."""
