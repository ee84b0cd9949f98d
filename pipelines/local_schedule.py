"""Stage scheduling for the local runner: with several workers, every stage whose inputs are complete runs at once.

Beam's ``FnApiRunner`` runs a pipeline's stages one after the other: a
stage starts once the one before it has finished, even where the two do
not depend on each other. With two workers, the second is idle whenever a
stage runs out of bundles for it (its last bundle, a stage of one bundle)
and while the runner plans the next stage. In aisle recommend at 10x, two
workers, that idle time summed to 7.7 worker-seconds over its 48 stages
(35.6 s), most of it in the tails of its largest stages.

:class:`ConcurrentStagesRunner` keeps Beam's plan, its watermarks and its
bookkeeping, and changes only when stages start: each stage whose inputs
are complete (Beam's watermark manager says so, the same test Beam's loop
makes) is started at once, in a thread of its own, and its bundles go to
whichever worker is free (:class:`pipelines.local_bundles.SizedBundleManager`
draws workers from one pool for all stages). The runner's bookkeeping
(buffers, watermarks, side inputs written to state, the queues) stays
serial: it runs under one lock, which a stage lets go of only while its
bundles run on the workers. Two stages that write into the same list
buffer (the inputs of a Flatten that is not read by a GroupByKey) never run
at once, as Beam's bookkeeping copies such a buffer for each of its
readers when a writer finishes; stages that write into the same shuffle
may (:meth:`ConcurrentStagesRunner._writes`).

Recommend at 10x with two workers, four pairs of runs alternating Beam's
loop and this one (2-core Xeon): idle worker time 8.1-9.4 -> 1.6-2.8
worker-seconds, job 36.0-40.6 s (median 38.4) -> 28.7-39.4 s (median
35.0), with byte-identical outputs.
"""

from __future__ import annotations

import functools
import threading
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

from apache_beam.metrics.execution import MetricsContainer
from apache_beam.metrics.metricbase import MetricName
from apache_beam.metrics.monitoring_infos import consolidate
from apache_beam.runners import runner
from apache_beam.runners.portability.fn_api_runner import execution, fn_runner, translations

__all__ = ["BundleNotStarted", "ConcurrentStagesRunner"]


class BundleNotStarted(RuntimeError):
    """A bundle that was not sent to a worker, as another bundle of the job had failed (its worker may be gone)."""


def _released(lock: threading.RLock, process_bundle):
    """``process_bundle`` run without ``lock``, which the calling stage holds once."""

    @functools.wraps(process_bundle)
    def run(*args, **kwargs):
        lock.release()
        try:
            return process_bundle(*args, **kwargs)
        finally:
            lock.acquire()

    return run


class ConcurrentStagesRunner(fn_runner.FnApiRunner):
    """Beam's ``FnApiRunner`` that, with more than one worker, starts each stage as soon as its inputs are complete.

    With one worker, stages run one after the other, as in Beam's runner:
    there is no idle worker to fill. So they do when bundles are repeated
    (Beam's ``bundle_repeat``, a testing aid that checkpoints and restores the
    runner's whole state around each bundle).
    """

    _bookkeeping: threading.RLock | None = None

    def run_stages(self, stage_context, stages):
        if self._num_workers < 2 or self._bundle_repeat:  # a repeated bundle checkpoints the whole state: one at a time
            return super().run_stages(stage_context, stages)
        handlers = fn_runner.WorkerHandlerManager(stage_context.components.environments, self._provision_info)
        context = execution.FnApiRunnerExecutionContext(
            stages, handlers, stage_context.components, stage_context.safe_coders, stage_context.data_channel_coders,
            self._num_workers, split_managers=self._split_managers)
        pipeline_metrics = MetricsContainer("")
        pipeline_metrics.get_counter(
            MetricName(str(type(self)), self.NUM_FUSED_STAGES_COUNTER, urn="internal:" + self.NUM_FUSED_STAGES_COUNTER)
        ).update(len(stages))
        infos: dict[str, list] = {}
        self._bookkeeping = threading.RLock()
        try:
            with self.maybe_profile():
                context.setup()
                self._run_ready_stages(context, infos)
        finally:
            self._bookkeeping = None
            handlers.close_all()
        infos[""] = list(pipeline_metrics.to_runner_api_monitoring_infos("").values())
        return fn_runner.RunnerResult(runner.PipelineState.DONE, infos)

    def _run_ready_stages(self, context, infos: dict[str, list]) -> None:
        queues, lock = context.queues, self._bookkeeping
        running: dict = {}  # future -> stage name
        errors: list[BaseException] = []
        # a thread per running stage: a stage waits on its bundles, never on another stage
        with ThreadPoolExecutor(max(2, len(context.stages)), thread_name_prefix="aisle-stage") as pool:
            while True:
                if not errors:  # after a failure, no stage starts; those running end (their next bundles do not start)
                    with lock:
                        self._start_ready(context, pool, running)
                if not running:
                    break
                done, _ = wait(list(running), return_when=FIRST_COMPLETED)
                for future in done:
                    name = running.pop(future)
                    try:
                        result = future.result()
                    except BaseException as exc:
                        errors.append(exc)
                        continue
                    earlier = infos.get(name, ())
                    infos[name] = consolidate([*result.process_bundle.monitoring_infos, *earlier])
        if errors:  # the failure itself, not a bundle that was not started because of it
            raise next((exc for exc in errors if not isinstance(exc, BundleNotStarted)), errors[0])
        for kind, queue in (("ready", queues.ready_inputs), ("watermark-pending", queues.watermark_pending_inputs),
                            ("time-pending", queues.time_pending_inputs)):
            if len(queue):
                raise RuntimeError(f"{len(queue)} {kind} bundles did not run")

    def _start_ready(self, context, pool, running: dict) -> None:
        """Starts every stage whose inputs are complete, except a stage that runs already or one that would write
        into a list buffer that a running stage writes into (held back until they finish)."""
        queues = context.queues
        self._schedule_ready_bundles(context)
        held = []
        writing = {buffer for name in running.values() for buffer in self._writes(context, name)}
        while len(queues.ready_inputs) > 0:
            name, data = queues.ready_inputs.deque()
            writes = self._writes(context, name)
            if name in running.values() or writing & writes:
                held.append((name, data))
                continue
            writing |= writes
            running[pool.submit(self._execute_stage, context, name, data)] = name
        for item in held:
            queues.ready_inputs.enque(item)

    @staticmethod
    def _writes(context, name: str) -> set:
        """The buffers other than shuffles that a stage writes into.

        A shuffle (a GroupByKey's buffer) may take writes from stages that run
        at once: its one reader gets the buffer itself, and what a writer adds
        later is merged into it before the reader can start. A list buffer read
        by several stages is copied for each when its writer finishes, and a
        writer still running would add to one copy only.
        """
        outputs = context.bundle_manager_for(context.stages[name]).stage_data_outputs.values()
        return {buffer for buffer in outputs if translations.split_buffer_id(buffer)[0] != "group"}

    def _execute_stage(self, context, name: str, data):
        with self._bookkeeping:
            return self._execute_bundle(context, context.bundle_manager_for(context.stages[name]), data)

    def _run_bundle(self, runner_execution_context, bundle_context_manager, bundle_input, data_output,
                    expected_timer_output, bundle_manager):
        if self._bookkeeping is not None:  # the bundles run while other stages keep their books
            bundle_manager.process_bundle = _released(self._bookkeeping, bundle_manager.process_bundle)
        return super()._run_bundle(runner_execution_context, bundle_context_manager, bundle_input, data_output,
                                   expected_timer_output, bundle_manager)
