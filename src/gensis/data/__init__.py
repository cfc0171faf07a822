from gensis.data.sources import DEFAULT_DATA, ImageSet, open_data

__all__ = ["DEFAULT_DATA", "ImageSet", "open_data"]
