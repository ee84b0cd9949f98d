"""KFP component ``train_ner``: fine-tune the NER token classifier (``components.ner_train.train_ner``).

Splits the labelled sentences into train / tune / test (or uses
``eval_data`` for tune and test), trains, and writes the PyTorch model
folder (the input of ``quantize_ner``) and the held-out sentences
(``heldout/tune.txt`` calibrates and tunes the quantized candidates,
``heldout/test.txt`` is what ``evaluate`` scores them on).
"""

from kfp import dsl
from kfp.dsl import Dataset, Metrics, Model, Output

from components.kfp.images import AISLE_IMAGE


@dsl.component(base_image=AISLE_IMAGE, install_kfp_package=False)
def train_ner(
    train_data: str,
    model: Output[Model],
    heldout: Output[Dataset],
    metrics: Output[Metrics],
    eval_data: str = "",
    base_model: str = "",
    epochs: int = 1,
    max_steps: int = 0,
    batch_size: int = 16,
    max_length: int = 64,
    max_train_sentences: int = 0,
    max_eval_sentences: int = 0,
    learning_rate: float = 1e-4,
    seed: int = 13,
):
    """Train on ``train_data`` (a NER file, local or gs://); 0 / "" mean "not set" for the optional settings."""
    import os

    from components.kfp._common import log_metrics
    from components.kfp._ner import split_sentences, write_sentences
    from components.ner_train import TrainConfig
    from components.ner_train import train_ner as fit

    train, tune, test = split_sentences(train_data, eval_data or None, seed=seed)
    if max_train_sentences:
        train = train[:max_train_sentences]
    if max_eval_sentences:
        tune, test = tune[:max_eval_sentences], test[:max_eval_sentences]
    os.makedirs(heldout.path, exist_ok=True)
    write_sentences(tune, os.path.join(heldout.path, "tune.txt"))
    write_sentences(test, os.path.join(heldout.path, "test.txt"))
    config = TrainConfig(
        epochs=epochs,
        max_steps=max_steps or None,
        batch_size=batch_size,
        max_length=max_length,
        learning_rate=learning_rate,
        seed=seed,
    )
    result = fit(train, model.path, eval_data=tune, base_model=base_model or None, config=config)
    model.metadata.update({"family": "ner", "framework": "pytorch", "best_f1": result.best_f1, "steps": result.steps})
    heldout.metadata.update({"family": "ner", "train": len(train), "tune": len(tune), "test": len(test)})
    log_metrics(
        metrics,
        {
            "best_f1": result.best_f1,
            "steps": result.steps,
            "train_seconds": result.train_seconds,
            "sentences": {"train": len(train), "tune": len(tune), "test": len(test)},
            "tune": result.best_metrics,
        },
    )
