"""Record every finished episode as an :class:`~agentflow_env.trajectory.EpisodeRecord` JSONL
line."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import IO, Any

import gymnasium as gym

from agentflow_env.trajectory import TrajectoryBuilder

logger = logging.getLogger(__name__)

__all__ = ["RecordTrajectory"]


class RecordTrajectory(gym.Wrapper[Any, Any, Any, Any]):
    """Append one JSONL line per finished episode (the format the viewer and learners read).

    ## Description
    Builds each episode with :class:`~agentflow_env.trajectory.TrajectoryBuilder` from the
    ``reset``/``step`` results and writes it when the episode ends (``terminated`` or
    ``truncated``); the file is flushed after every episode, so a crash loses at most the
    episode in progress. Episodes still running at ``close()`` are not written (they have no
    outcome); ``reset`` in the middle of an episode drops it the same way.

    Place it anywhere in a wrapper stack: the action text is the step's action when it is a
    string, else ``info["action_text"]`` (set by ``CandidateActionWrapper``), else ``repr``.
    The task comes from the innermost env's ``task`` attribute (``AgentFlowEnv.task``).

    ## Arguments
    ``env``; ``path`` (created with its parent folders; truncated unless ``append=True``);
    ``episode_prefix`` (episode ids are ``f"{prefix}{n}"``); ``metadata`` (stored on every
    record, e.g. ``{"policy": "ppo"}``; each record also gets ``episode_index`` and, when
    ``CandidateActionWrapper`` is below, ``chosen`` indices per turn).

    ## Attributes
    ``episodes_written``: how many records were written so far.
    """

    def __init__(
        self,
        env: gym.Env[Any, Any],
        path: str | Path,
        *,
        episode_prefix: str = "ep",
        metadata: dict[str, Any] | None = None,
        append: bool = False,
    ) -> None:
        super().__init__(env)
        if not hasattr(env.unwrapped, "task"):
            raise TypeError(
                "RecordTrajectory needs an env with a `task` attribute (AgentFlowEnv), "
                f"got {env.unwrapped}"
            )
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Open for the wrapper's lifetime (closed by close()): one line per finished episode.
        self._file: IO[str] | None = open(  # noqa: SIM115
            self.path, "a" if append else "w", encoding="utf-8"
        )
        self.episode_prefix = episode_prefix
        self.metadata = dict(metadata or {})
        self.episodes_written = 0
        self._episode_index = 0
        self._builder: TrajectoryBuilder | None = None
        self._chosen: list[int] = []

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Any, dict[str, Any]]:
        obs, info = self.env.reset(seed=seed, options=options)
        if self._builder is not None and self._builder.record.turns:
            logger.debug(
                "episode %s dropped unfinished by reset()", self._builder.record.episode_id
            )
        task = self.env.unwrapped.task  # type: ignore[attr-defined]
        meta = {**self.metadata, "episode_index": self._episode_index}
        if seed is not None:
            meta["seed"] = seed
        self._builder = TrajectoryBuilder(
            f"{self.episode_prefix}{self._episode_index}", task, **meta
        )
        self._episode_index += 1
        self._chosen = []
        return obs, info

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        if self._file is None:
            raise gym.error.ClosedEnvironmentError("RecordTrajectory is closed")
        obs, reward, terminated, truncated, info = self.env.step(action)
        if self._builder is None:
            raise gym.error.ResetNeeded("call reset() before step()")
        text = action if isinstance(action, str) else info.get("action_text", repr(action))
        self._builder.add(text, float(reward), terminated, truncated, info)
        if "chosen" in info:
            self._chosen.append(int(info["chosen"]))
        if terminated or truncated:
            record = self._builder.record
            if self._chosen:
                record.metadata["chosen"] = list(self._chosen)
            self._file.write(record.model_dump_json() + "\n")
            self._file.flush()
            self.episodes_written += 1
            self._builder = None
        return obs, float(reward), terminated, truncated, info

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        super().close()
