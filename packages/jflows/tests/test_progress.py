import math

import jflows


def test_progress_bar_draws_the_count_and_fields_on_stderr(capsys):
    with jflows.progress_bar("demo loop", 10, fields=("loss", "val")) as bar:
        assert bar.enabled
        assert [i for i in range(1, 11) if bar.due(i)] == list(range(1, 11))  # every = 1
        for i in range(10):
            bar.update(i + 1, loss=1.0 / (i + 1), val=math.nan)
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "demo loop" in captured.err
    assert "10/10" in captured.err
    assert "loss 0.1" in captured.err


def test_progress_bar_resumes_and_throttles(capsys):
    with jflows.progress_bar("resumed", 200, start=50) as bar:
        assert bar.every == 4
        assert not bar.due(51)
        assert bar.due(52)
        assert bar.due(200)
        bar.update(200, loss=0.5)
    assert "(from step 50)" in capsys.readouterr().err


def test_disabled_progress_bar_is_silent(capsys):
    with jflows.progress_bar("quiet", 10, enabled=False) as bar:
        assert not bar.enabled
        assert not bar.due(10)
        bar.update(10, loss=1.0)
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == ""
