"""Data: CIFAR archives (real and generated), image folders, label sets, normalisation, device-resident batches."""
