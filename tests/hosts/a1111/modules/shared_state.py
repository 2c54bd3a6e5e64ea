"""Stand-in for A1111 1.10 ``modules/shared_state.py``: the ``State`` flags long jobs poll.

``interrupted`` is set by the Interrupt button and ``POST /sdapi/v1/interrupt``; ``skipped`` by
Skip. The job counters drive the web UI's progress bar.
"""
from __future__ import annotations

import logging

log = logging.getLogger(__name__)


class State:
    skipped = False
    interrupted = False
    stopping_generation = False
    job = ""
    job_no = 0
    job_count = 0
    processing_has_refined_job_count = False
    sampling_step = 0
    sampling_steps = 0
    textinfo = None

    def interrupt(self) -> None:
        self.interrupted = True
        log.info("Received interrupt request")

    def skip(self) -> None:
        self.skipped = True
        log.info("Received skip request")

    def nextjob(self) -> None:
        self.job_no += 1
        self.sampling_step = 0

    def begin(self, job: str = "(unknown)") -> None:
        self.sampling_step = 0
        self.job_count = -1
        self.processing_has_refined_job_count = False
        self.job_no = 0
        self.skipped = False
        self.interrupted = False
        self.stopping_generation = False
        self.textinfo = None
        self.job = job

    def end(self) -> None:
        self.job = ""
        self.job_count = 0
