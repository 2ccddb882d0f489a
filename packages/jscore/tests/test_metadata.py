import importlib.metadata

import jscore


def test_installed_metadata_matches_the_package():
    assert importlib.metadata.version("jscore") == jscore.__version__
    assert all(hasattr(jscore, name) for name in jscore.__all__)
