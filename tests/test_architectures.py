"""The architecture registry: every registered model type is built, tested and documented,
and nothing else in extract/ branches on architecture names."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_registry_lists_every_module_with_a_tiny_builder():
    from matprobe.extract.arch import architectures, get_architecture
    from matprobe.extract.tiny import tiny_architectures

    modules = sorted(p.stem for p in (REPO / "src/matprobe/extract/arch").glob("*.py") if not p.stem.startswith("_"))
    assert sorted(architectures()) == modules  # module name = model_type
    assert architectures()[:3] == ("llava", "qwen2_vl", "qwen2_5_vl")
    # formats with their own loader (original LLaVA) are tested against their original code instead
    own = {a for a in architectures() if get_architecture(a).own_loader}
    assert set(tiny_architectures()) == set(architectures()) - own
    for name in architectures():
        spec = get_architecture(name)
        assert spec.name == name
        assert spec.own_loader or spec.model_class.endswith("ForConditionalGeneration")
        if spec.dynamic_resolution:
            assert spec.image_tokens_vary


def test_every_architecture_is_tested_and_documented():
    import test_extract_adapters
    import test_extract_equivalence
    from matprobe.extract.arch import architectures, get_architecture
    from matprobe.extract.tiny import tiny_architectures

    readme = (REPO / "README.md").read_text()
    guide = (REPO / "docs/architectures.md").read_text()
    for name in architectures():
        assert re.search(rf"^\| `{name}` \|", readme, re.M), f"README model table lacks {name}"
        assert f"`{name}`" in guide, name
        if get_architecture(name).own_loader:  # compared with its original code's outputs instead
            assert (REPO / f"tests/test_{name}.py").is_file(), name
            continue
        # a tiny builder is all a new architecture needs for the equivalence tests and the shared
        # fixture (both read the registry)
        assert name in tiny_architectures() and name in test_extract_equivalence.ARCHS, name
        if get_architecture(name).legacy_key_renames:  # a pre-4.52 layout exists: its adapters are tested
            assert name in test_extract_adapters.ARCHS, name


def test_extract_has_no_architecture_name_branches():
    names = "|".join(["llava", "qwen2_vl", "qwen2_5_vl", "llava_next", "gemma3", "idefics3"])
    pattern = re.compile(rf"""(==|!=|\bin)\s*\(?\s*["']({names})["']""")
    for path in (REPO / "src/matprobe/extract").glob("*.py"):
        for i, line in enumerate(path.read_text().splitlines(), 1):
            assert not pattern.search(line), f"{path.name}:{i}: {line.strip()}"


def test_unknown_architecture_lists_the_registry(tmp_path):
    import json

    from matprobe.errors import ExtractError
    from matprobe.extract.checkpoints import detect_architecture

    (tmp_path / "config.json").write_text(json.dumps({"model_type": "smolvlm"}))
    with pytest.raises(ExtractError, match="unsupported architecture 'smolvlm'; supported: llava, qwen2_vl, "
                                           "qwen2_5_vl, gemma3, idefics3, llava_next \\(and original"):
        detect_architecture(tmp_path)
