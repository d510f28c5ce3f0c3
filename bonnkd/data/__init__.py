"""CIFAR-10 in memory (tfds, an image folder or the tarball) and its augmentation."""
