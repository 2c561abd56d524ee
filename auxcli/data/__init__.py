"""Data: CIFAR archives (real and generated), label sets, normalisation, device-resident batches."""
