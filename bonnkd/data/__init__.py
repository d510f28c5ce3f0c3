"""CIFAR-10 in memory (tfds, image folder or tarball), its augmentation."""
