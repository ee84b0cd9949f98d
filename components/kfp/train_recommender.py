"""KFP component ``train_recommender``: item embeddings on basket completion (``components.recommend_model``).

Reads the purchase baskets of an ingest output, splits them by time
(``split`` date, or the last 20%), builds the item vocabulary from the
training period, trains the Keras model and exports it
(``export_model``: SavedModel, vocabulary, item embeddings). The held-out
baskets and calibration queries go to ``heldout``.
"""

from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Model, Output

from components.kfp.images import AISLE_IMAGE


@dsl.component(base_image=AISLE_IMAGE, install_kfp_package=False)
def train_recommender(
    events: Input[Dataset],
    model: Output[Model],
    heldout: Output[Dataset],
    metrics: Output[Metrics],
    split: str = "",
    dim: int = 32,
    epochs: int = 2,
    max_query_items: int = 48,
    seed: int = 0,
):
    """Train on the ``events`` Dataset (an ingest output); ``split`` is an ISO date or "" for the last 20%."""
    import json
    import os

    from components.kfp._common import location, log_metrics
    from components.kfp._recommender import split_baskets
    from components.recommend_data import read_event_baskets
    from components.recommend_eval import evaluate, make_queries
    from components.recommend_model import TrainConfig, export_model, train_item_model
    from transforms.recommend_vocab import ItemVocab

    source = location(events)
    events_dir = os.path.join(source, "events") if not source.endswith(".parquet") else source
    baskets = read_event_baskets(events_dir)
    train, test = split_baskets(baskets, split or None)
    train_items = [list(b.items) for b in train]
    vocab = ItemVocab.build(train_items)
    config = TrainConfig(dim=dim, epochs=epochs, max_query_items=max_query_items, seed=seed)
    trained = train_item_model(train_items, vocab, config)
    export_model(trained, model.path)

    os.makedirs(heldout.path, exist_ok=True)
    with open(os.path.join(heldout.path, "test_baskets.json"), "w") as fh:
        json.dump([list(b.items) for b in test], fh)
    calibration = make_queries(train_items, vocab, seed=seed)
    with open(os.path.join(heldout.path, "calibration_queries.json"), "w") as fh:
        json.dump([list(map(int, q)) for q in calibration.rows[:500]], fh)

    queries = make_queries([list(b.items) for b in test], vocab, seed=0)
    held = evaluate(trained.scorer(), queries, k=10) if len(queries) else {}
    model.metadata.update({"family": "recommender", "framework": "tensorflow", "vocab_size": len(vocab), "max_query_items": max_query_items})
    heldout.metadata.update({"family": "recommender", "train_baskets": len(train), "test_baskets": len(test)})
    log_metrics(
        metrics,
        {
            "baskets": {"train": len(train), "test": len(test)},
            "vocab_size": len(vocab),
            "loss": trained.history[-1]["loss"] if trained.history else float("nan"),
            "train_seconds": trained.history[-1]["seconds"] if trained.history else 0.0,
            "heldout": {k: v for k, v in held.items() if "@" in k},
        },
    )
