from __future__ import annotations

from ignite.engine import Engine

from handlers.progress import ProgressBar


def test_bar_shows_the_transformed_output(capsys):
    engine = Engine(lambda engine, batch: {"loss": 0.5 * batch})
    ProgressBar(output_transform=lambda output: {"loss": output["loss"]}, desc="train").attach(engine)
    engine.run([1.0, 2.0], max_epochs=1)
    err = capsys.readouterr().err
    assert "train" in err and "loss=1" in err


def test_a_single_number_is_labelled_loss(capsys):
    engine = Engine(lambda engine, batch: {"loss": 0.25 * batch})
    ProgressBar(output_transform=lambda output: output["loss"], desc="train").attach(engine)
    engine.run([1.0, 2.0], max_epochs=1)
    err = capsys.readouterr().err
    assert "loss=0.5" in err and "output=" not in err
