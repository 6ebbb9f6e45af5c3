"""The model side of a chat session: which model or server it runs on, loading it (with the fewer-GPU-layers
retry), the context size, and the engine that goes with it. ChatSession (chat.py) adds the conversation."""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path

from qwen_chat.engines.protocol import ChatEngine, EngineEvent, Failed, Loaded, LoadRequest
from qwen_chat.gguf.files import ModelInfo
from qwen_chat.planning import fit_memory
from qwen_chat.planning.planner import Plan
from qwen_chat.qwen3.template import ChatTemplate, Variant
from qwen_chat.session.events import Notice, SessionEvent
from qwen_chat.session.model_loading import prepare_load, with_fewer_layers
from qwen_chat.session.sources import LocalModel, Server, Source, local_engine
from qwen_chat.store.records import StoreError
from qwen_chat.system.hardware import Machine


class ModelSide(ABC):
    def __init__(self, sink: Callable[[SessionEvent], None], engine: ChatEngine | None, source: Source | None,
                 remote: Callable[[Callable[[EngineEvent], None], Server], ChatEngine]) -> None:
        self.sink = sink
        self.source = source
        self._local = engine
        self._make_remote = remote
        self.engine: ChatEngine | None = None
        self.info: ModelInfo | None = None
        self.remote_model: str | None = None  # set when talking to an HTTP endpoint
        self.template: ChatTemplate | None = None
        self.plan: Plan | None = None
        self._load_request: LoadRequest | None = None
        self._fit_key = ""
        self._retried = False
        self.n_ctx = 0
        self.gpu_layers: int | None = None  # as actually loaded (after any retry with fewer layers)
        self.ready = False
        self.context_used = 0
        self._fresh_context = True  # the next answer may try the whole conversation (a new context)
        self.planner_chose_context = True
        self.seed: int | None = None  # `--seed`: every answer's sampling seed, above the preset's and [chat]'s
        # The engine is created, swapped and handed its load under this lock: two loads asked for at once (the
        # app opening its model twice) must find one engine, never each make their own and load side by side.
        self._engine_lock = threading.RLock()

    @abstractmethod
    def _on_engine_event(self, event: EngineEvent) -> None:
        """Every engine event, on the engine's thread (ChatSession)."""

    @abstractmethod
    def busy(self) -> str | None:
        """Why the model cannot be changed now (an answer is streaming), or None."""

    # -- model --

    @property
    def model_name(self) -> str:
        if self.remote_model:
            return self.remote_model
        if self.info:
            return self.info.path.name
        if isinstance(self.source, LocalModel):
            return self.source.path.name
        return self.source.url if isinstance(self.source, Server) else ""

    @property
    def variant(self) -> Variant:
        if self.remote_model is not None:
            return Variant.HYBRID  # a served Qwen3: thinking switches through chat_template_kwargs
        return self.template.variant if self.template else Variant.NO_THINKING

    def open(self, context: str = "auto") -> Plan | None:
        """Load the source (a local file: planned first, may raise ModelFileError or DoesNotFit)."""
        if isinstance(self.source, Server):
            self.connect(self.source.url, self.source.api_key, self.source.model)
            return None
        if isinstance(self.source, LocalModel):
            return self.load_model(self.source.path, self.source.n_ctx, context=context)
        raise ValueError("no model chosen: pass --model FILE or --endpoint URL")

    def connect(self, base_url: str, api_key: str | None = None, model: str | None = None) -> None:
        """Use an OpenAI-compatible server (llama-server, vLLM, SGLang) instead of a local file."""
        endpoint = Server(base_url, api_key, model)
        with self._engine_lock:
            self.source = endpoint
            self._swap_engine(self._make_remote(self._on_engine_event, endpoint))
            self.remote_model = model or ""
            self.info, self.template, self.plan, self.ready = None, None, None, False
            self._engine().load(LoadRequest(Path(base_url), 0))

    def load_model(self, path: Path, n_ctx: int | None = None, machine: Machine | None = None,
                   context: str = "auto") -> Plan:
        """Check the file, plan memory, then queue the load. Raises ModelFileError or DoesNotFit."""
        prepared = prepare_load(path, n_ctx, machine, context)
        if prepared.notice is not None:
            self.sink(prepared.notice)
        with self._engine_lock:  # the slow part (reading the file, planning) stays outside
            if self.remote_model is not None or self.engine is None:
                self._swap_engine(self._local or local_engine(self._on_engine_event))
            self.source = LocalModel(path, n_ctx)
            self.remote_model = None
            self.planner_chose_context = prepared.planner_chose_context
            self._fit_key, self._retried = prepared.fit_key, False
            self.info, self.template, self.plan, self.ready = prepared.info, prepared.template, prepared.plan, False
            self._load_request = prepared.request
            self._engine().load(prepared.request)
        return prepared.plan

    def _swap_engine(self, engine: ChatEngine) -> None:
        if self.engine is not None and self.engine is not engine:
            self.engine.shutdown()
        engine.on_event = self._on_engine_event
        self.engine = engine.start()

    def _engine(self) -> ChatEngine:
        if self.engine is None:
            raise StoreError("no model is loaded yet")
        return self.engine

    def change_context(self, key: str, machine: Machine | None = None) -> Plan:
        """Re-plan for a context preset ("auto", "native", "64k", "128k", "256k") and reload the model in the
        background; the conversation stays. Raises StoreError (cannot now), ValueError (not offered) or
        DoesNotFit (memory), each with the reason."""
        from qwen_chat.qwen3.context_presets import context_presets, preset_for

        if self.info is None or self.template is None:
            raise StoreError("the context is set by the server for an endpoint; load a local model to change it")
        busy = self.busy()
        if busy:
            raise StoreError(busy)
        preset = preset_for(key, self.info, self.variant)
        if preset is None:
            offered = ", ".join(p.key for p in context_presets(self.info, self.variant))
            raise ValueError(f"{self.info.path.name} does not offer the context {key!r}; it offers: {offered}")
        return self.load_model(self.info.path, preset.n_ctx, machine)

    def _loaded(self, event: Loaded) -> None:
        if self.remote_model is not None:
            self.remote_model = str(event.model_path)  # the served model's id
        self.ready = True
        self._fresh_context = True  # a new context may hold turns an earlier one had to leave out
        self.context_used = 0
        self.n_ctx = event.n_ctx
        self.gpu_layers = event.n_gpu_layers
        if self._retried:
            fit_memory.remember_layers(self._fit_key, event.n_gpu_layers)

    def _retry_with_fewer_layers(self, failed: Failed) -> bool:
        """A GPU load that failed (llama.cpp ran out of memory) is retried with one layer fewer."""
        request, info = self._load_request, self.info
        if request is None or info is None or "cancelled" in failed.message:
            return False
        fewer = with_fewer_layers(request, info)
        if fewer is None:
            return False
        self._load_request, self._retried = fewer, True
        self.sink(Notice(f"Loading with {fewer.n_gpu_layers + 1} GPU layers failed; trying {fewer.n_gpu_layers}."))
        self._engine().load(fewer)
        return True

