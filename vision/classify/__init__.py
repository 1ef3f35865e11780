"""Image classification: a head over shared EfficientNet-Lite0 features (single and
multi-label), and the ImageNet classifier itself as ``prebuilt-image``."""
