"""Configs: the base config, config files and overrides, their validation."""
