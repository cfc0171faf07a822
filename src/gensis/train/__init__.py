"""The one training loop (``loop.fit``) shared by pretraining, the E-LDM and the autoencoder trainers."""
