"""A stage-planning step of the local runner: a Flatten that only a GroupByKey reads is written straight into its shuffle.

Beam's ``FnApiRunner`` turns every Flatten of several inputs into one write
stage per input and a read stage, and a GroupByKey into a write and a read
(``translations.sink_flattens`` and ``expand_gbk``). So a ``CoGroupByKey``
(a Flatten of its tagged inputs, then a GroupByKey) costs a stage of its own
that only decodes the flattened elements and encodes them again for the
shuffle. :func:`sink_flattens_into_groups` has each input write into the
GroupByKey's buffer instead, which is what a Flatten means there: the
runner's grouping buffer already takes writes from several stages (it
merges them before the read). Flattens with other readers, or read by
anything but a GroupByKey's write, go to Beam's own step.

aisle recommend has four such joins (frequently bought together's blend
and the three fallbacks) and a batching shuffle of two inputs, and runs 48
stages instead of 54. A join of three 400k-element inputs
(``benchmarks/local_runner.py``) ran 1.68x faster in-process and 1.32x
with two worker processes than with Beam's plan, on 2 cores. Beam's own
tests of its runner pass on this plan (``tests/test_local_runner_beam_suite.py``).
"""

from __future__ import annotations

from apache_beam.portability import common_urns
from apache_beam.portability.api import beam_runner_api_pb2
from apache_beam.runners.portability.fn_api_runner import translations
from apache_beam.runners.worker import bundle_processor

__all__ = ["sink_flattens_into_groups"]

_FLATTEN = common_urns.primitives.FLATTEN.urn


def _group_write(stage: translations.Stage) -> beam_runner_api_pb2.PTransform | None:
    """The stage's transform, when the stage is only the write of a GroupByKey's shuffle (``expand_gbk``'s)."""
    if len(stage.transforms) != 1:
        return None
    transform = stage.transforms[0]
    if transform.spec.urn != bundle_processor.DATA_OUTPUT_URN:
        return None
    kind, _ = translations.split_buffer_id(transform.spec.payload)
    return transform if kind == "group" else None


def _window_coder(pipeline_context, pcoll: str) -> str:
    components = pipeline_context.components
    return components.windowing_strategies[components.pcollections[pcoll].windowing_strategy_id].window_coder_id


def sink_flattens_into_groups(stages, pipeline_context):
    """A stage-planning phase in place of ``translations.sink_flattens``, for the stages ``expand_gbk`` made.

    For each Flatten of several inputs whose output only a GroupByKey's
    write reads, both stages give way to one write per input into that
    GroupByKey's buffer (the inputs first take the output's coder, as Beam's
    step does: the buffer decodes every write with it; inputs windowed with
    another window coder keep Beam's step). Stages that had to
    follow either now follow the writes. Every other Flatten is left to
    ``translations.sink_flattens``.
    """
    stages = list(stages)
    readers: dict[str, list[translations.Stage]] = {}
    for stage in stages:
        for transform in stage.transforms:
            for pcoll in transform.inputs.values():
                readers.setdefault(pcoll, []).append(stage)

    writes_for: dict[translations.Stage, list[translations.Stage]] = {}  # a dropped stage -> the writes replacing it
    emit_at: dict[translations.Stage, list[translations.Stage]] = {}  # the group write stage -> the stages emitted there
    for stage in stages:
        if len(stage.transforms) != 1 or stage.transforms[0].spec.urn != _FLATTEN or len(stage.transforms[0].inputs) < 2:
            continue
        (output,) = stage.transforms[0].outputs.values()
        consumers = readers.get(output, [])
        group_write = _group_write(consumers[0]) if len(consumers) == 1 else None
        if group_write is None or len({_window_coder(pipeline_context, pcoll) for pcoll in (output, *stage.transforms[0].inputs.values())}) > 1:
            continue
        # inputs whose coder is not the output's get an identity step that re-encodes them with it, as Beam's
        # sink_flattens does (here as an identity DoFn, which that step leaves alone, not as a one-input Flatten)
        *transcodes, stage = translations.fix_flatten_coders([stage], pipeline_context)
        flatten = stage.transforms[0]
        # the shuffle's buffer decodes the writes with the coder of its GroupByKey's input, which the runner
        # registers for a stage that writes that input, and none does now: registered here, as it would be there
        pipeline_context.add_data_channel_coder(output)
        follows = (stage.must_follow | consumers[0].must_follow) - {stage}
        writes = [
            translations.Stage(
                f"{group_write.unique_name}/{tag}",
                [
                    beam_runner_api_pb2.PTransform(
                        unique_name=f"{group_write.unique_name}/{tag}",
                        inputs={tag: pcoll},
                        spec=beam_runner_api_pb2.FunctionSpec(urn=bundle_processor.DATA_OUTPUT_URN, payload=group_write.spec.payload),
                        environment_id=flatten.environment_id or group_write.environment_id,
                    )
                ],
                downstream_side_inputs=frozenset(),
                must_follow=follows,
            )
            for tag, pcoll in flatten.inputs.items()
        ]
        writes_for[stage] = writes_for[consumers[0]] = writes
        emit_at[stage], emit_at[consumers[0]] = transcodes, writes

    planned = []
    for stage in stages:
        planned.extend(emit_at.get(stage, ()))
        if stage not in writes_for:
            planned.append(stage)
    for stage in planned:  # what followed a dropped stage follows the writes in its place
        if stage.must_follow & writes_for.keys():
            stage.must_follow = frozenset(
                after for before in stage.must_follow for after in writes_for.get(before, [before]) if after is not stage)
    return translations.sink_flattens(planned, pipeline_context)
