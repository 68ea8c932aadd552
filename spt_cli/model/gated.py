"""GatedPromptModel: SPT's gated prompt layers and every prompt-tuning baseline over one loop.

Notation (method.md section 1): H_P(l-1) are the p prompt states and H_X(l-1) the text states
entering block l. At a prompt layer l, P_in(l) = a_l * G_l(H_X(l-1)) + (1 - a_l) * H_P(l-1), and
block l runs on [P_in(l); H_X(l-1)] with the mask extended by p ones. Hard gates (fixed
layers) use a_l = 1 at their layers and carry the prompt states up elsewhere. Prompt positions
exist only from the first prompt layer on (soft gates without an input prompt mix with
H_P = 0 there); the blocks below it run under ``torch.no_grad``.
Block 0's prompt (the input prompt) is prepended to the word embeddings, as PEFT's prompt
tuning does, so position/type embeddings, LayerNorm and dropout apply to it too.

The gate and the mixture are :mod:`spt_cli.model.gates`, the generators
:mod:`spt_cli.model.generators`; the block loop is :meth:`GatedPromptModel._run`. Its faster
paths, each exact: with ``method.frozen_eval`` the frozen blocks below the first prompt layer
run in eval mode, so the states entering that layer are a pure function of the input ids
(:meth:`GatedPromptModel.lower_states`) and ``forward(lower=...)`` resumes from them (the
cache of :mod:`spt_cli.train.cache`); layouts, prefixes and the pruned last block live in
:mod:`spt_cli.model.runner`; dropout in the backbone uses :mod:`spt_cli.model.fast`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from spt_cli.backbones import BackboneAdapter
from spt_cli.errors import ConfigError
from spt_cli.model import fast
from spt_cli.model.gates import GATE_TYPES, Gates, mix
from spt_cli.model.generators import (
    NaiveGenerator,
    PooledGenerator,
    PrefixEncoder,
    StaticGenerator,
    StaticPrompt,
    TextView,
)
from spt_cli.model.heads import ClassifierHead, TaskInfo, classification_loss, summary_index
from spt_cli.model.methods import MethodSpec
from spt_cli.model.runner import BlockRunner


class GatedPromptModel(nn.Module):
    """A frozen backbone with gated prompt layers and a task head.

    Build it with :func:`spt_cli.model.build_model`. ``forward`` returns
    ``{"logits": [B, C] (or [B] for regression), "loss": ... when labels are given}``.
    """

    def __init__(
        self,
        backbone: BackboneAdapter,
        spec: MethodSpec,
        task: TaskInfo,
        head_name: str,
        head_cfg: dict[str, Any],
        model_cfg: dict[str, Any],
        label_word_ids: list[int] | None = None,
        tokenizer: Any = None,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.spec = spec
        self.task = task
        self.head_name = head_name
        self.head_cfg = dict(head_cfg)
        self.model_cfg = dict(model_cfg)
        self.tokenizer = tokenizer
        self.num_layers = backbone.num_layers
        self.is_decoder = backbone.is_decoder
        p, d = spec.num_tokens, backbone.hidden_size

        for param in backbone.parameters():
            param.requires_grad_(spec.train_backbone)
        # Cheaper dropout masks and attention dropout (same law; eval mode untouched).
        fast.install(backbone.model)

        # Input prompt (block 0): lives in word-embedding space; Lester et al.'s init from
        # the embeddings of randomly drawn vocabulary tokens keeps it on that scale.
        self.input_prompt: StaticPrompt | None = None
        if spec.num_tokens and spec.input_prompt == "static":
            words = backbone.word_embeddings().weight
            idx = torch.randint(0, words.shape[0], (p,)).to(words.device)
            self.input_prompt = StaticPrompt(p, backbone.embed_dim, init=words[idx].detach())

        self.prefix: PrefixEncoder | None = None
        self.generators = nn.ModuleDict()
        if spec.generator == "prefix" and spec.layers:
            if not backbone.supports_prefix:
                raise ConfigError(
                    f"method={spec.name} (key/value prefixes) is not supported for the "
                    f"{backbone.family} family, whose attention takes no key/value cache; "
                    "use method=deep_prompt"
                )
            kv_heads, head_dim = backbone.kv_shape()
            self.prefix = PrefixEncoder(
                p, spec.layers, kv_heads, head_dim, d,
                spec.prefix_projection, spec.prefix_hidden, spec.dropout,
            )  # fmt: skip
        elif spec.layers:
            for layer in spec.layers:
                self.generators[str(layer)] = self._make_generator(spec, d)

        # One gate per generated prompt layer, of the type method.gate names (prefixes are
        # not mixed: they have no gates).
        self.gates: Gates | None = None
        if len(self.generators):
            self.gates = GATE_TYPES[spec.gate](len(spec.layers), spec.tau)

        if head_name == "classifier":
            outputs = 1 if task.is_regression else task.num_labels
            self.head: nn.Module | None = ClassifierHead(
                d,
                outputs,
                str(head_cfg["pooling"]),
                self.is_decoder,
                float(head_cfg["dropout"]),
            )
        else:
            self.head = None
            if not label_word_ids or len(label_word_ids) != task.num_labels:
                raise ConfigError(
                    f"head={head_name} needs one label word per label of {task.name}; "
                    f"got {label_word_ids}"
                )
        self.register_buffer("label_word_ids", torch.tensor(label_word_ids or [], dtype=torch.long))
        self.full_vocab = bool(head_cfg["full_vocab"])

        # Blocks from this index on need autograd; below it nothing is trainable.
        if spec.train_backbone:
            self._grad_from: int | None = 0
        elif self.input_prompt is not None:
            self._grad_from = 0
        elif spec.layers and spec.num_tokens:
            self._grad_from = min(spec.layers)
        else:
            self._grad_from = None
        # Compute the last block at the head's positions only (exact: nothing reads the rest).
        self.prune_last_block = True
        # Called as observer(layer, a_l, G_l(H_X), H_P) at every gated mixture (diagnostics).
        self.mix_observer: Callable[[int, torch.Tensor, torch.Tensor, torch.Tensor], None] | None
        self.mix_observer = None

    @staticmethod
    def _make_generator(spec: MethodSpec, d: int) -> nn.Module:
        p = spec.num_tokens
        if spec.generator == "pooled":
            return PooledGenerator(d, spec.bottleneck, p, spec.pool, spec.dropout)
        if spec.generator == "naive":
            return NaiveGenerator(d, spec.bottleneck, p, spec.dropout)
        return StaticGenerator(p, d)

    # -- gates and parameter groups --------------------------------------------------------
    @property
    def candidate_layers(self) -> list[int]:
        """Blocks with a generator (gated), or with a prefix."""
        return list(self.spec.layers) if self.spec.num_tokens else []

    @property
    def tau(self) -> float:
        return self.gates.tau if self.gates is not None else self.spec.tau

    def set_tau(self, tau: float) -> None:
        """Set the gate temperature (annealing)."""
        self.spec.tau = float(tau)
        if self.gates is not None:
            self.gates.set_tau(tau)

    def set_gate_budget(self, budget: float | None) -> None:
        """Hold sum_l a_l at ``budget`` (None: free gates); how is the gate type's."""
        if self.gates is not None:
            self.gates.set_budget(budget)

    def override_gates(self, values: torch.Tensor | None) -> None:
        """Use ``values`` as the gates of every forward (None: the learned gates again)."""
        if self.gates is not None:
            self.gates.override(values)

    def gate_values(self) -> torch.Tensor:
        """Differentiable a_l per candidate layer (ones for hard gates and prefixes)."""
        if self.gates is not None:
            return self.gates.probs()
        return torch.ones(len(self.candidate_layers), device=self.label_word_ids.device)

    def gate_probs(self) -> torch.Tensor:
        """Detached a_l per candidate layer, in ``candidate_layers`` order."""
        return self.gate_values().detach().clone()

    def gate_entropy(self) -> float:
        """Mean entropy of the gates (0 without gates): how undecided a search still is."""
        return 0.0 if self.gates is None else float(self.gates.entropy())

    def named_gate_parameters(self) -> list[tuple[str, nn.Parameter]]:
        return [(n, p) for n, p in self.named_parameters() if n.startswith("gates.")]

    def named_weight_parameters(self) -> list[tuple[str, nn.Parameter]]:
        """Trainable non-gate parameters: prompts, generators, prefixes, head (+ backbone)."""
        return [
            (n, p)
            for n, p in self.named_parameters()
            if p.requires_grad and not n.startswith("gates.")
        ]

    def gate_parameters(self) -> list[nn.Parameter]:
        return [p for _, p in self.named_gate_parameters()]

    def backbone_parameters(self) -> list[nn.Parameter]:
        """The trained backbone weights (fine-tuning; empty for a frozen backbone): the
        optimiser gives them ``trainer.backbone_lr``."""
        return [p for p in self.backbone.parameters() if p.requires_grad]

    def weight_parameters(self) -> list[nn.Parameter]:
        return [p for _, p in self.named_weight_parameters()]

    def parameter_table(self) -> dict[str, Any]:
        from spt_cli.model.params import parameter_table

        return parameter_table(self)

    # -- frozen lower layers -----------------------------------------------------------------
    @property
    def cache_layer(self) -> int | None:
        """First block whose input is no longer frozen (the first prompt layer; L when no block
        takes a prompt), when everything below it is frozen and, by ``method.frozen_eval``, in
        eval mode: the states entering it are then a pure function of the input ids. None when
        block 0 already trains (input prompt, prefix at block 0, fine-tuning) or dropout is on.
        """
        if not self.spec.frozen_eval or self.spec.train_backbone:
            return None
        start = self.num_layers if self._grad_from is None else self._grad_from
        return start if start > 0 else None

    def _lower_eval(self) -> None:
        """Put the embeddings and the blocks below ``cache_layer`` in eval mode (no dropout)."""
        start = self.cache_layer
        if start is None:
            return
        upper = {id(m) for block in self.backbone.blocks()[start:] for m in block.modules()}
        for module in self.backbone.modules():
            if id(module) not in upper:
                module.training = False

    def train(self, mode: bool = True) -> GatedPromptModel:
        """``nn.Module.train``, except that with ``method.frozen_eval`` the frozen part below
        the first prompt layer stays in eval mode (see :attr:`cache_layer`)."""
        super().train(mode)
        self._lower_eval()
        return self

    @torch.no_grad()
    def lower_states(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The states [B, n, d] entering block :attr:`cache_layer` (no autograd graph).

        ``forward(..., lower=states)`` continues from them and gives the logits of the full
        forward; padded positions may hold anything (zeros in a cache): no real position
        reads them.
        """
        if self.cache_layer is None:
            raise ValueError(
                f"method={self.spec.name} has no frozen lower layers to precompute "
                "(input prompt, fine-tuning or method.frozen_eval=false)"
            )
        self._lower_eval()  # also when a caller changed modes behind train()'s back
        return self._run(input_ids, attention_mask, token_type_ids, stop=self.cache_layer)

    # -- forward ---------------------------------------------------------------------------
    def _grad(self, layer: int):
        on = self._grad_from is not None and layer >= self._grad_from
        return contextlib.nullcontext() if on else torch.no_grad()

    def encode(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
        *,
        lower: torch.Tensor | None = None,
        rows: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Final text states [B, n, d] (after the final norm), prompt positions removed.

        ``lower``: the states entering block :attr:`cache_layer` (:meth:`lower_states`); the
        blocks below are skipped. ``rows`` [B]: one text position per row; only those are
        computed in the last block and the result is [B, d].
        """
        return self._run(input_ids, attention_mask, token_type_ids, lower=lower, rows=rows)

    def _run(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None,
        lower: torch.Tensor | None = None,
        rows: torch.Tensor | None = None,
        stop: int | None = None,
    ) -> torch.Tensor:
        """The block loop: embeddings (or cached lower states), then per block the layer's
        prompt, if it has one, and the block itself; stop before block ``stop`` if given."""
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        mask = attention_mask.to(torch.long)
        batch, p = input_ids.shape[0], self.spec.num_tokens
        self._check_length(input_ids.shape[1])
        kv = self.prefix(batch) if self.prefix is not None and stop is None else None
        runner = BlockRunner(self.backbone, mask, p, kv, self.prefix is not None, rows)
        text = TextView(mask, summary_index(mask, self.is_decoder), p)
        if lower is not None:
            start, h, has_prompt = self._resume_from(lower)
        else:
            h = self._embed(input_ids, token_type_ids, mask, runner)
            start, has_prompt = 0, self.input_prompt is not None
        end = self.num_layers if stop is None else stop
        # Gates only when a gated layer runs: a stochastic draw for the frozen lower blocks
        # alone (the lower-state cache) would shift the RNG stream, and a resumed run would
        # then draw other gates than an uninterrupted one.
        gated = self.gates is not None and any(start <= x < end for x in self.spec.layers)
        gates = self.gates() if gated else None
        for layer in range(start, end):
            with self._grad(layer):
                if str(layer) in self.generators:
                    h, has_prompt = self._insert_prompt(layer, h, has_prompt, text, gates)
                h = runner.block(layer, h, has_prompt)
        if stop is not None:
            return h
        with self._grad(self.num_layers - 1):
            return runner.finish(h, has_prompt)

    def _insert_prompt(
        self,
        layer: int,
        h: torch.Tensor,
        has_prompt: bool,
        text: TextView,
        gates: torch.Tensor | None,
    ) -> tuple[torch.Tensor, bool]:
        """([P_in(l); H_X(l-1)], True): the layer's generated prompt, mixed by its gate (soft
        gates) with the prompt states from below (zeros where none exist yet). A gate fixed
        closed with no prompt below inserts nothing, (h, False): with hard 0/1 gates the search
        model is then exactly the retrain's spt_fixed model on the open layers."""
        p = self.spec.num_tokens
        index = None if self.gates is None else self.spec.layers.index(layer)
        if index is not None and not has_prompt and self.gates.closed(index):
            return h, False
        hx = h[:, p:] if has_prompt else h
        new = self.generators[str(layer)](hx, text)
        if gates is not None:
            a = gates[index].to(new.dtype)
            old = h[:, :p] if has_prompt else torch.zeros_like(new)
            if self.mix_observer is not None:
                self.mix_observer(layer, a, new, old)
            new = mix(a, new, old)
        return torch.cat([new, hx], 1), True

    def _embed(
        self,
        input_ids: torch.Tensor,
        token_type_ids: torch.Tensor | None,
        mask: torch.Tensor,
        runner: BlockRunner,
    ) -> torch.Tensor:
        """Embedding output, with the input prompt prepended to the word embeddings."""
        bb = self.backbone
        tt = token_type_ids if bb.uses_token_types else None
        grad = self.input_prompt is not None or self.spec.train_backbone
        with contextlib.nullcontext() if grad else torch.no_grad():
            prompt = None if self.input_prompt is None else self.input_prompt(input_ids.shape[0])
            return bb.embed(input_ids, tt, mask, prompt=prompt, position_offset=runner.offset)

    def _resume_from(self, lower: torch.Tensor) -> tuple[int, torch.Tensor, bool]:
        """(first block, states, has prompt) when the frozen blocks below ran earlier."""
        if self.cache_layer is None:
            raise ValueError(f"method={self.spec.name} cannot resume from lower-layer states")
        return self.cache_layer, lower, False

    def _check_length(self, n: int) -> None:
        limit = self.backbone.max_positions()
        if limit is None or not self.spec.num_tokens:
            return
        # Prompt positions take position ids when they enter at the input, as prefixes
        # (positions shifted by p) or on rotary models (positions over the whole sequence).
        takes = self.input_prompt is not None or self.prefix is not None
        takes = takes or (self.backbone.layer_prompts_take_positions and bool(self.spec.layers))
        if takes and n + self.spec.num_tokens > limit:
            raise ConfigError(
                f"num_tokens={self.spec.num_tokens} + sequence length {n} exceeds the "
                f"{limit} positions of {self.model_cfg.get('name')}; lower data.max_seq_length "
                "or method.num_tokens"
            )

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
        mask_pos: torch.Tensor | None = None,
        label_pos: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        lower: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Logits [B, C] ([B] for regression) and, with ``labels``, the loss.

        ``lower``: precomputed :meth:`lower_states` of this batch (e.g. from a cache).
        """
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        out: dict[str, torch.Tensor] = {}
        if self.head is not None:
            rows = self.head.rows(attention_mask) if self.prune_last_block else None
            hidden = self.encode(input_ids, attention_mask, token_type_ids, lower=lower, rows=rows)
            if rows is not None:
                logits = self.head.classify(hidden)
            else:
                logits = self.head(hidden, attention_mask)
            if self.task.is_regression:
                logits = logits.squeeze(-1)
            out["logits"] = logits
            if labels is not None:
                out["loss"] = classification_loss(logits, labels, self.task.is_regression)
            return out
        pos = mask_pos if self.head_name == "mlm" else label_pos
        if pos is None:
            key = "mask_pos" if self.head_name == "mlm" else "label_pos"
            raise ConfigError(
                f"head={self.head_name} needs {key} in the batch; encode the data with "
                f"head={self.head_name}"
            )
        pos = pos.long().view(-1)
        if self.prune_last_block:
            states = self.encode(input_ids, attention_mask, token_type_ids, lower=lower, rows=pos)
        else:
            hidden = self.encode(input_ids, attention_mask, token_type_ids, lower=lower)
            states = hidden[torch.arange(hidden.shape[0], device=hidden.device), pos]
        vocab = self.backbone.lm_logits(states)  # [B, V]
        out["logits"] = vocab[:, self.label_word_ids]
        if labels is not None:
            if self.full_vocab:
                out["loss"] = F.cross_entropy(vocab, self.label_word_ids[labels.long()])
            else:
                out["loss"] = F.cross_entropy(out["logits"], labels.long())
        return out
