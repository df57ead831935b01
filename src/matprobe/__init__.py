"""matprobe: how much Modality, Anatomy and Task a vision-language model's embedding holds."""

__version__ = "0.1.0"
