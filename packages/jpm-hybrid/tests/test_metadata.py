import importlib.metadata

import jpm_hybrid


def test_installed_metadata_matches_the_package():
    assert importlib.metadata.version("jpm-hybrid") == jpm_hybrid.__version__
    assert all(hasattr(jpm_hybrid, name) for name in jpm_hybrid.__all__)
