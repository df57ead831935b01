"""matprobe: how much Modality, Anatomy and Task a vision-language model's embedding holds.

    import matprobe as mp
    res = mp.mi("store.h5", factors="M,A,T")   # ChainResult: .frame(), .to_table()
    chk = mp.check("store.h5", mi=res)         # CheckResult
    sig = mp.significance("results.csv")       # SignificanceResult
    mp.bounds.fano(error=0.168, classes=4)     # FanoBounds

Everything is imported on first use, so `import matprobe` stays fast.
"""

__version__ = "0.1.0"

# name -> (module, attribute or None for the module itself)
_LAZY = {
    "check": ("matprobe.api", "check"),
    "significance": ("matprobe.api", "significance"),
    "open_store": ("matprobe.api", "open_store"),
    "bounds": ("matprobe.bounds", None),
    "DEFAULTS": ("matprobe.defaults", "DEFAULTS"),
    "Defaults": ("matprobe.defaults", "Defaults"),
    "EmbeddingStore": ("matprobe.store", "EmbeddingStore"),
    "Table": ("matprobe.present", "Table"),
    "Column": ("matprobe.present", "Column"),
    "to_markdown": ("matprobe.present", "to_markdown"),
    "to_html": ("matprobe.present", "to_html"),
    "to_latex": ("matprobe.present", "to_latex"),
    "to_csv": ("matprobe.present", "to_csv"),
    "to_json": ("matprobe.present", "to_json"),
    # `mp.mi(...)` is the package matprobe.mi, which is callable (see matprobe/mi/__init__.py)
    "mi": ("matprobe.mi", None),
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name):
    if name not in _LAZY:
        raise AttributeError(f"module 'matprobe' has no attribute {name!r}")
    import importlib

    module, attr = _LAZY[name]
    mod = importlib.import_module(module)
    value = mod if attr is None else getattr(mod, attr)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
