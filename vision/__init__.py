"""Image backends: safe decoding, the Lite0 backbone, classification, detection and OCR."""
