import importlib.metadata

import jlens


def test_installed_metadata_matches_the_package():
    assert importlib.metadata.version("jlens") == jlens.__version__
    assert all(hasattr(jlens, name) for name in jlens.__all__)
