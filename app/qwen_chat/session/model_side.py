"""The model side of a chat session: which model or server it runs on, loading it (with the fewer-GPU-layers
retry), the context it was loaded with, and the engine that goes with it.

ChatSession (chat.py) holds one as `session.model` and hands it two callables: `sink` (what the UI is told) and
`on_event` (where the engine's events go once the model side has seen them: it keeps the loads, the session
the answers). Nothing here calls back into the session otherwise.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

from qwen_chat.engines.protocol import ChatEngine, EngineEvent, Failed, Loaded, LoadRequest
from qwen_chat.gguf.files import ModelInfo
from qwen_chat.planning import fit_memory
from qwen_chat.planning.draft_choice import DraftChoice
from qwen_chat.planning.planner import Plan
from qwen_chat.qwen3.template import ChatTemplate, Variant
from qwen_chat.session.events import Notice, SessionEvent
from qwen_chat.session.model_loading import PreparedLoad, prepare_load, with_fewer_layers
from qwen_chat.session.sources import LocalModel, Server, Source, local_engine, looks_quantized, remote_engine
from qwen_chat.store.records import Attachment, StoreError
from qwen_chat.system.hardware import Machine

EngineFactory = Callable[[Callable[[EngineEvent], None]], ChatEngine]
RemoteFactory = Callable[[Callable[[EngineEvent], None], Server], ChatEngine]


class ModelSide:
    def __init__(self, sink: Callable[[SessionEvent], None], on_event: Callable[[EngineEvent], None],
                 source: Source | None = None, local: EngineFactory | None = None,
                 remote: RemoteFactory = remote_engine) -> None:
        """`local` makes the engine for a GGUF file (llama.cpp unless given: the tests' FakeEngine), `remote`
        the one for an endpoint."""
        self.sink = sink
        self._on_event = on_event
        self.source = source
        self._make_local = local or local_engine
        self._make_remote = remote
        self.engine: ChatEngine | None = None
        self.info: ModelInfo | None = None
        self.remote_model: str | None = None  # set when talking to an HTTP endpoint
        self.template: ChatTemplate | None = None
        self.plan: Plan | None = None
        self.draft: DraftChoice | None = None  # the draft model planned beside a local model, or why none
        self._load_request: LoadRequest | None = None
        self._fit_key = ""
        self._retried = False
        self.n_ctx = 0
        self.gpu_layers: int | None = None  # as actually loaded (after any retry with fewer layers)
        self.ready = False
        self.planner_chose_context = True
        # the engine's context as the conversation left it: tokens the last answer used, and whether it is new
        # (a load), so that the next answer may try the whole conversation again
        self.context_used = 0
        self.fresh_context = True
        # The engine is created, swapped and handed its load under this lock: two loads asked for at once (the
        # app opening its model twice) must find one engine, never each make their own and load side by side.
        self._engine_lock = threading.RLock()

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

    @property
    def quantized(self) -> bool:
        if self.remote_model is not None:
            return looks_quantized(self.model_name)
        return self.info.quantized if self.info else True

    def open(self, context: str = "auto") -> Plan | None:
        """Load the source (a local file: planned first, may raise ModelFileError or DoesNotFit)."""
        source = self.source
        if isinstance(source, Server):
            self.connect(source.url, source.api_key, source.model)
            return None
        if isinstance(source, LocalModel):
            if source.planned is not None:  # the CLI read and planned it at start: not again
                self._start(source.path, source.n_ctx, source.planned)
                return source.planned.plan
            return self.load_model(source.path, source.n_ctx, context=context)
        raise ValueError("no model chosen: pass --model FILE or --endpoint URL")

    def connect(self, base_url: str, api_key: str | None = None, model: str | None = None) -> None:
        """Use an OpenAI-compatible server (llama-server, vLLM, SGLang) instead of a local file."""
        endpoint = Server(base_url, api_key, model)
        with self._engine_lock:
            self.source = endpoint
            self._swap_engine(self._make_remote(self._on_engine_event, endpoint))
            self.remote_model = model or ""
            self.info, self.template, self.plan, self.ready, self.draft = None, None, None, False, None
            self.loaded_engine().load(LoadRequest(Path(base_url), 0))

    def load_model(self, path: Path, n_ctx: int | None = None, machine: Machine | None = None,
                   context: str = "auto") -> Plan:
        """Check the file, plan memory, then queue the load. Raises ModelFileError or DoesNotFit."""
        prepared = prepare_load(path, n_ctx, machine, context)
        self._start(path, n_ctx, prepared)
        return prepared.plan

    def _start(self, path: Path, n_ctx: int | None, prepared: PreparedLoad) -> None:
        """Queue a planned load (the slow part, reading the file and planning, is done by then)."""
        if prepared.notice is not None:
            self.sink(prepared.notice)
        with self._engine_lock:
            if self.remote_model is not None or self.engine is None:
                self._swap_engine(self._make_local(self._on_engine_event))
            self.source = LocalModel(path, n_ctx)  # a reload (F3, /context) plans afresh
            self.remote_model = None
            self.planner_chose_context = prepared.planner_chose_context
            self._fit_key, self._retried = prepared.fit_key, False
            self.info, self.template, self.plan, self.ready = prepared.info, prepared.template, prepared.plan, False
            self.draft = prepared.draft
            self._load_request = prepared.request
            self.loaded_engine().load(prepared.request)

    def _swap_engine(self, engine: ChatEngine) -> None:
        if self.engine is not None and self.engine is not engine:
            self.engine.shutdown()
        engine.on_event = self._on_engine_event
        self.engine = engine.start()

    def loaded_engine(self) -> ChatEngine:
        """The engine, or StoreError when no model was chosen yet."""
        if self.engine is None:
            raise StoreError("no model is loaded yet")
        return self.engine

    def close(self) -> None:
        if self.engine is not None:
            self.engine.shutdown()

    def check_room(self, files: tuple[Attachment, ...]) -> None:
        """Files that cannot fit the context are refused before anything is saved, with both sizes."""
        size = sum(f.tokens for f in files)
        room = self.n_ctx - self.context_used if self.n_ctx else 0
        if files and self.n_ctx and size > room:
            names = ", ".join(f.name for f in files)
            raise StoreError(f"{names}: about {size:,} tokens, but the context has room for {max(room, 0):,} of its "
                             f"{self.n_ctx:,} (F7 or /context for a larger one); nothing was sent")

    def change_context(self, key: str, machine: Machine | None = None, busy: str | None = None) -> Plan:
        """Re-plan for a context preset ("auto", "native", "64k", "128k", "256k") and reload the model in the
        background; the conversation stays. `busy`: why the session cannot reload now, if it cannot. Raises
        StoreError (cannot now), ValueError (not offered) or DoesNotFit (memory), each with the reason."""
        from qwen_chat.qwen3.context_presets import context_presets, preset_for

        if self.info is None or self.template is None:
            raise StoreError("the context is set by the server for an endpoint; load a local model to change it")
        if busy:
            raise StoreError(busy)
        preset = preset_for(key, self.info, self.variant)
        if preset is None:
            offered = ", ".join(p.key for p in context_presets(self.info, self.variant))
            raise ValueError(f"{self.info.path.name} does not offer the context {key!r}; it offers: {offered}")
        return self.load_model(self.info.path, preset.n_ctx, machine)

    def context_command(self, key: str, busy: str | None) -> Notice:
        """`/context` (what the context is and which others there are) or `/context KEY` (reload with it)."""
        from qwen_chat.planning.planner import DoesNotFit
        from qwen_chat.qwen3.context_presets import context_presets

        if not key:
            if self.info is None:
                return Notice("The server sets the context of an endpoint.", error=True)
            offered = ", ".join(p.key for p in context_presets(self.info, self.variant))
            return Notice(f"Context: {self.n_ctx:,} tokens. /context KEY reloads with another: {offered}.")
        try:
            chosen = self.change_context(key, busy=busy)
        except (StoreError, ValueError, DoesNotFit) as exc:
            return Notice(str(exc), error=True)
        yarn = f" with YaRN ×{chosen.yarn_factor}" if chosen.yarn_factor else ""
        return Notice(f"Reloading with a context of {chosen.n_ctx:,} tokens{yarn}; the conversation stays.")

    # -- engine thread --

    def _on_engine_event(self, event: EngineEvent) -> None:
        """A load's end is kept here (or retried with fewer GPU layers); every event but a retried failure then
        goes on to `on_event`."""
        if isinstance(event, Loaded):
            self._loaded(event)
        elif isinstance(event, Failed) and event.request_id is None:
            if self._retry_with_fewer_layers(event):
                return
            self.ready = False
        self._on_event(event)

    def _loaded(self, event: Loaded) -> None:
        if self.remote_model is not None:
            self.remote_model = str(event.model_path)  # the served model's id
        self.fresh_context = True  # a new context may hold turns an earlier one had to leave out
        self.context_used = 0
        self.n_ctx = event.n_ctx
        self.gpu_layers = event.n_gpu_layers
        self.ready = True
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
        if self.draft is not None and self.draft.option is not None:  # the retry loads without it (model_loading)
            self.draft = DraftChoice(None, "the model did not fit the GPU as planned, so no draft model beside it")
        self.sink(Notice(f"Loading with {fewer.n_gpu_layers + 1} GPU layers failed; trying {fewer.n_gpu_layers}."))
        self.loaded_engine().load(fewer)
        return True
