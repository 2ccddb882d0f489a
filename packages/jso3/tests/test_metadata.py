import importlib.metadata

import jso3


def test_installed_metadata_matches_the_package():
    assert importlib.metadata.version("jso3") == jso3.__version__
    assert all(hasattr(jso3, name) for name in jso3.__all__)
