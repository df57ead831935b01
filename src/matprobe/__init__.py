"""matprobe: how much Modality, Anatomy and Task a vision-language model's embedding holds.

One function per command, with the command's defaults and a typed result:

    import matprobe as mp
    mp.validate("manifest.jsonl")                                   # ValidationReport
    mp.extract(ckpt="ckpt/", data="manifest.jsonl", out="s.h5")      # ExtractResult
    res = mp.mi("s.h5", factors="M,A,T,Y")    # ChainResult: .frame(), .to_table()
    chk = mp.check("s.h5", mi=res)            # CheckResult (reuses I(Z;Y|M,A,T) from res)
    sig = mp.significance("results.csv")      # SignificanceResult
    mp.bounds.fano(error=0.168, classes=4)    # FanoBounds

Also mp.split, mp.sweep, mp.compare, mp.relate, mp.significance_summary, mp.report,
mp.run, mp.demo, mp.open_store, mp.store_info (see `matprobe.api`). Everything is imported
on first use, so `import matprobe` stays fast.
"""

__version__ = "0.1.0"

# name -> (module, attribute or None for the module itself)
_LAZY = {
    **{verb: ("matprobe.api", verb) for verb in (
        "validate", "split", "extract", "mi", "sweep", "compare", "relate", "check", "significance",
        "significance_summary", "report", "run", "demo", "open_store", "store_info", "init")},
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
}

__all__ = ["__version__", *_LAZY]

# Three verbs share their name with a subpackage: `matprobe.mi` (estimators), `matprobe.extract`,
# `matprobe.report`. Importing a subpackage binds it as an attribute of its parent, once, when
# it is first imported. These subpackages are imported here (they are light: their names load
# on first use) so that the binding happens now; removing it leaves the name to __getattr__,
# which returns the API function. The packages stay importable as usual
# (`from matprobe.mi import chain_terms`, `import matprobe.mi.chain`).
import matprobe.extract  # noqa: E402,F401
import matprobe.mi  # noqa: E402,F401
import matprobe.report  # noqa: E402,F401

for _name in ("extract", "mi", "report"):
    globals().pop(_name, None)
del _name, matprobe  # noqa: F821 (`import matprobe.x` bound the name `matprobe` here)

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
