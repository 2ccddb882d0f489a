import importlib.metadata

import jinfer


def test_installed_metadata_matches_the_package():
    assert importlib.metadata.version("jinfer") == jinfer.__version__
    assert all(hasattr(jinfer, name) for name in jinfer.__all__)
