import importlib.metadata

import jpm_core


def test_installed_metadata_matches_the_package():
    assert importlib.metadata.version("jpm-core") == jpm_core.__version__
    assert all(hasattr(jpm_core, name) for name in jpm_core.__all__)
