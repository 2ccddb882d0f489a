import importlib.metadata

import jflows


def test_installed_metadata_matches_the_package():
    assert importlib.metadata.version("jflows") == jflows.__version__
    assert all(hasattr(jflows, name) for name in jflows.__all__)
