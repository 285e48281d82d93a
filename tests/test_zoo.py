"""Tests of companion.diagnose on a zoo of models no one here wrote.

What is tested against what:

1. Ground truth, measured before any diagnosis: :func:`trained` trains a deep copy of
   each model on its fixed batch (its own optimizer: AdamW at lr 1e-3 to 1e-2, SGD with
   momentum 0.9 for the two HF ResNets and the float16 MLP; 20 to 60 steps) and records
   the loss on that batch before the first and after the last step. A model **learns**
   when every loss is finite and the final loss is at most ``LEARNS_FACTOR`` (0.7) times
   the smaller of its initial loss and the best-constant loss of the batch (the entropy
   of the targets' label frequencies; for an LM, of the next tokens): it fits this batch
   by a margin that no prediction ignoring the input reaches. It **diverges** when a
   loss is not finite or the final one is above ``DIVERGES_FACTOR`` (10) times the
   initial one. Each model trains once per session (``functools.lru_cache``);
   ``tests/benchmarks/zoo_table.py`` prints the numbers. Also measured: the broken
   models' healthy twins learn under the same training; the dead channels are still
   dead after it; the detached branch's parameters never move (``torch.equal``); the
   float16 gradients are finite element by element while two of their float16 norms are
   not; no example of the batch is routed to the MoE's expert 3.
2. Healthy models learn (asserted first), then give ``report.findings == []``: without
   an optimizer, with an AdamW (lr 1e-3) passed to ``diagnose`` and, for six of them,
   under ``watch`` for 20 steps; deliberate designs give their notes (severity "info").
   Hugging Face models (GPT-2 with tied embeddings, BERT on a padded batch with its
   attention mask, Llama, ViT, ConvNeXt with its 1e-6 layer scale, ResNet) are called
   as ``diagnose(model, {..., "labels": ...})``: ``report.loss`` is the model's own
   ``.loss``, or ``F.cross_entropy`` on ``.logits`` (class dimension last) when the
   labels come as ``y``. The torch patterns: a residual CNN with zero-initialised last
   batch-norm gammas, LoRA (B = 0) on a frozen attention + MLP, a frozen backbone with
   every parameter in the optimizer, a zero-initialised head, layer scale 1e-6, ReZero
   alpha = 0, dropout, eval mode, a 5 %-positive binary classifier whose bias is the log
   prior, a mixture of experts with an expert no example is routed to, a sparse
   embedding (SparseAdam + Adam; given only the Adam, "not_in_optimizer" and nothing
   else), a bfloat16 GPT-2 (its LayerNorm gains cannot move at lr 1e-3: measured by one
   AdamW step on a copy, and found as "precision", cause "rounding", on exactly those
   layers) and a
   float16 MLP under a loss scale of 2**16 (GradScaler's initial scale).
3. Broken models: the measured harm first, then the symptom (and cause) of the
   contract: no norms and weights x3 (HF ResNet, 10-layer MLP) -> "exploding" (or
   "nonfinite"); a 12-layer sigmoid stack -> "vanishing"; GPT-2 with its embeddings
   x1000 (loss 841, 280 after training) -> "initial_loss"; 18 of a convolution's 20
   channels with bias -10 before a ReLU -> "dead_units" at 90 %; a ``.detach()`` in
   forward -> "no_gradient" with cause "cut_graph" on that branch; a frozen zero head
   -> a finding naming ``head.weight``; NaN in one parameter -> "nonfinite" naming it;
   SGD at lr 10 under ``watch`` -> "diverged".

Every batch and initialisation is drawn from seeded generators (``torch.Generator``,
or ``torch.manual_seed`` inside ``torch.random.fork_rng`` for the Hugging Face
constructors), so the ground truth is the same on every run. Runtime: about 15 s on one
thread (transformers' import included).
"""
from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

import copy  # noqa: E402
import functools  # noqa: E402
import math  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from typing import Any, Callable, Optional  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

transformers = pytest.importorskip("transformers")

from companion.diagnose import diagnose, watch  # noqa: E402

LEARNS_FACTOR = 0.7
DIVERGES_FACTOR = 10.0
WATCH_STEPS = 20


pytestmark = pytest.mark.usefixtures("one_thread")   # small models: one thread


# ------------------------------------------------------------------------- cases
@dataclass
class Case:
    """A model, its fixed batch and how it trains.

    ``diagnose(model, x, y, loss=loss)`` is the call under test (``y`` and ``loss``
    None for a Hugging Face model given its labels in ``x``). Training minimises the
    same loss with ``make_opt(model)`` (an optimizer or a list of them) for ``steps``
    steps; the gradients are divided by ``loss_scale`` before each step (GradScaler's
    unscale)."""

    model: nn.Module
    x: Any
    y: Any = None
    loss: Any = None
    targets: Optional[torch.Tensor] = None      # the labels the baseline is computed from
    make_opt: Callable = None
    steps: int = 40
    loss_scale: float = 1.0
    params: str = "all"                          # what diagnose's AdamW gets (see adamw)
    hf: bool = False
    lm: bool = False                             # a causal LM (labels shifted by one)
    info: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.make_opt is None:
            self.make_opt = adamw(1e-3)


def adamw(lr: float, params: str = "all") -> Callable:
    """AdamW on every parameter (``"all"``, requires_grad or not) or on the trainable
    ones (``"trainable"``)."""
    def make(model):
        ps = [p for p in model.parameters() if params == "all" or p.requires_grad]
        return torch.optim.AdamW(ps, lr=lr)
    return make


def sgd(lr: float) -> Callable:
    """SGD with momentum 0.9 on every parameter (the ResNet recipe)."""
    return lambda model: torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _seeded(seed: int, build: Callable[[], nn.Module]) -> nn.Module:
    """``build()`` with torch's global RNG seeded (HF constructors draw from it), the
    caller's RNG state restored."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return build()


def _cycle_tokens(batch: int, length: int, vocab: int, seed: int) -> torch.Tensor:
    """Token sequences that count up by one from a random start (mod ``vocab``, token
    ids 3.. so that 0-2 stay special): learnable next-token targets."""
    start = torch.randint(0, vocab - 3, (batch, 1), generator=_gen(seed))
    return 3 + (start + torch.arange(length)) % (vocab - 3)


def _images(batch: int, size: int, classes: int, seed: int):
    g = _gen(seed)
    return (torch.randn(batch, 3, size, size, generator=g),
            torch.randint(0, classes, (batch,), generator=g))


def _teacher(batch: int, d: int, classes: int, seed: int):
    """Gaussian inputs and the argmax of a random linear teacher."""
    g = _gen(seed)
    x = torch.randn(batch, d, generator=g)
    return x, (x @ torch.randn(d, classes, generator=g)).argmax(1)


def _mlp(d_in: int, width: int, d_out: int, depth: int, seed: int, act=nn.ReLU,
         norm: bool = False) -> nn.Sequential:
    layers, d = [], d_in
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        for _ in range(depth - 1):
            layers += [nn.Linear(d, width)] + ([nn.LayerNorm(width)] if norm else []) + [act()]
            d = width
        layers.append(nn.Linear(d, d_out))
    return nn.Sequential(*layers)


# --- Hugging Face models
def gpt2_config(**kw):
    return transformers.GPT2Config(n_layer=2, n_embd=64, n_head=4, vocab_size=64,
                                   n_positions=32, bos_token_id=1, eos_token_id=2, **kw)


def build_gpt2(seed: int = 0) -> Case:
    model = _seeded(seed, lambda: transformers.GPT2LMHeadModel(gpt2_config()))
    ids = _cycle_tokens(8, 16, 64, seed)
    return Case(model, {"input_ids": ids, "labels": ids}, targets=ids, hf=True, lm=True,
                make_opt=adamw(3e-3), steps=30)


def build_gpt2_bf16() -> Case:
    case = build_gpt2()
    case.model = case.model.to(torch.bfloat16)
    return case


def build_gpt2_embed_x1000() -> Case:
    case = build_gpt2()
    with torch.no_grad():
        case.model.transformer.wte.weight.mul_(1000)   # tied: the LM head too
        case.model.transformer.wpe.weight.mul_(1000)
    return case


def build_bert(seed: int = 0) -> Case:
    config = transformers.BertConfig(vocab_size=64, hidden_size=64, num_hidden_layers=2,
                                     num_attention_heads=4, intermediate_size=128,
                                     max_position_embeddings=32, num_labels=2,
                                     pad_token_id=0)
    model = _seeded(seed, lambda: transformers.BertForSequenceClassification(config))
    g = _gen(seed)
    batch, length = 16, 12
    ids = torch.randint(3, 64, (batch, length), generator=g)
    lengths = torch.randint(3, length + 1, (batch,), generator=g)
    mask = (torch.arange(length) < lengths[:, None]).long()
    ids = ids * mask                                    # padding id 0
    labels = (ids[:, 1] >= 33).long()                   # the first real token's half
    return Case(model, {"input_ids": ids, "attention_mask": mask, "labels": labels},
                targets=labels, hf=True, make_opt=adamw(1e-3), steps=40)


def build_llama(seed: int = 0) -> Case:
    config = transformers.LlamaConfig(vocab_size=64, hidden_size=64, intermediate_size=128,
                                      num_hidden_layers=2, num_attention_heads=4,
                                      num_key_value_heads=2, max_position_embeddings=32,
                                      bos_token_id=1, eos_token_id=2)
    model = _seeded(seed, lambda: transformers.LlamaForCausalLM(config))
    ids = _cycle_tokens(8, 16, 64, seed)
    return Case(model, {"input_ids": ids, "labels": ids}, targets=ids, hf=True, lm=True,
                make_opt=adamw(3e-3), steps=30)


def build_vit(seed: int = 0) -> Case:
    config = transformers.ViTConfig(image_size=32, patch_size=4, hidden_size=64,
                                    num_hidden_layers=2, num_attention_heads=4,
                                    intermediate_size=128, num_labels=10)
    model = _seeded(seed, lambda: transformers.ViTForImageClassification(config))
    img, lab = _images(16, 32, 10, seed)
    return Case(model, {"pixel_values": img, "labels": lab}, targets=lab, hf=True,
                make_opt=adamw(1e-3), steps=30)


def build_convnext(seed: int = 0) -> Case:
    config = transformers.ConvNextConfig(hidden_sizes=[16, 32, 64, 128], depths=[1, 1, 1, 1],
                                         num_labels=10, image_size=32)
    model = _seeded(seed, lambda: transformers.ConvNextForImageClassification(config))
    img, lab = _images(16, 32, 10, seed)
    return Case(model, {"pixel_values": img, "labels": lab}, targets=lab, hf=True,
                make_opt=adamw(3e-3), steps=30)


def _resnet(seed: int):
    config = transformers.ResNetConfig(embedding_size=16, hidden_sizes=[16, 32, 64, 128],
                                       depths=[1, 1, 1, 1], num_labels=10)
    return _seeded(seed, lambda: transformers.ResNetForImageClassification(config))


def build_resnet(seed: int = 0) -> Case:
    img, lab = _images(16, 32, 10, seed)
    return Case(_resnet(seed), {"pixel_values": img, "labels": lab}, targets=lab, hf=True,
                make_opt=sgd(0.01), steps=30)


def build_resnet_no_norm_x3(seed: int = 0) -> Case:
    """HF ResNet with every BatchNorm replaced by Identity and every conv weight x3."""
    model = _resnet(seed)
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, nn.BatchNorm2d):
                setattr(module, child_name, nn.Identity())
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                m.weight.mul_(3)
    img, lab = _images(16, 32, 10, seed)
    return Case(model, {"pixel_values": img, "labels": lab}, targets=lab, hf=True,
                make_opt=sgd(0.01), steps=30)


# --- torch patterns
class BasicBlock(nn.Module):
    """conv-BN-ReLU-conv-BN plus the identity, then ReLU (He et al. 2016)."""

    def __init__(self, c: int, zero_init: bool = True):
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c)
        if zero_init:                                   # Goyal et al. 2017
            nn.init.zeros_(self.bn2.weight)

    def forward(self, x):
        h = F.relu(self.bn1(self.conv1(x)))
        return F.relu(x + self.bn2(self.conv2(h)))


class SmallResNet(nn.Module):
    def __init__(self, c: int = 16, blocks: int = 3, classes: int = 10, dropout: float = 0.0,
                 zero_init: bool = True):
        super().__init__()
        self.stem = nn.Conv2d(3, c, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(c)
        self.blocks = nn.Sequential(*[BasicBlock(c, zero_init) for _ in range(blocks)])
        self.drop = nn.Dropout(dropout)
        self.fc = nn.Linear(c, classes)

    def forward(self, x):
        h = self.blocks(F.relu(self.bn(self.stem(x))))
        return self.fc(self.drop(h.mean((2, 3))))


def build_zero_init_residual(seed: int = 0) -> Case:
    model = _seeded(seed, SmallResNet)
    img, lab = _images(16, 16, 10, seed)
    return Case(model, img, lab, targets=lab, make_opt=adamw(1e-2), steps=60)


def build_eval_mode(seed: int = 0) -> Case:
    """The residual CNN (gammas 1) with dropout, in eval mode (running statistics, no
    dropout), as when fine-tuning with frozen batch-norm statistics."""
    model = _seeded(seed, lambda: SmallResNet(dropout=0.3, zero_init=False))
    img, lab = _images(16, 16, 10, seed)
    with torch.no_grad():                               # warm running statistics
        for _ in range(30):
            model(img)
    model.eval()
    return Case(model, img, lab, targets=lab, make_opt=adamw(3e-3), steps=60)


class LoRALinear(nn.Module):
    """A frozen Linear plus B A x (alpha / r), A Kaiming-uniform, B = 0 (Hu et al. 2021,
    as peft initialises it)."""

    def __init__(self, base: nn.Linear, r: int = 4, alpha: float = 8.0):
        super().__init__()
        self.base = base.requires_grad_(False)
        self.lora_A = nn.Parameter(torch.empty(r, base.in_features))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, r))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        self.scaling = alpha / r

    def forward(self, x):
        return self.base(x) + (x @ self.lora_A.T @ self.lora_B.T) * self.scaling


class LoRAModel(nn.Module):
    """One attention block and an MLP on sequences of vectors, mean-pooled to a linear
    classifier; all frozen but LoRA adapters on q, v and both MLP layers."""

    def __init__(self, d: int = 32, classes: int = 4):
        super().__init__()
        self.q, self.k = LoRALinear(nn.Linear(d, d)), nn.Linear(d, d)
        self.v, self.o = LoRALinear(nn.Linear(d, d)), nn.Linear(d, d)
        self.norm = nn.LayerNorm(d)
        self.fc1, self.fc2 = LoRALinear(nn.Linear(d, 2 * d)), LoRALinear(nn.Linear(2 * d, d))
        self.head = nn.Linear(d, classes)
        for m in (self.k, self.o, self.norm, self.head):
            m.requires_grad_(False)

    def forward(self, x):
        att = F.scaled_dot_product_attention(self.q(x), self.k(x), self.v(x))
        x = x + self.o(att)
        x = x + self.fc2(F.gelu(self.fc1(self.norm(x))))
        return self.head(x.mean(1))


def build_lora(seed: int = 0) -> Case:
    model = _seeded(seed, LoRAModel)
    g = _gen(seed)
    x = torch.randn(32, 8, 32, generator=g)
    y = torch.randint(0, 4, (32,), generator=g)
    return Case(model, x, y, targets=y, make_opt=adamw(1e-2, "trainable"), steps=40,
                params="trainable")


class Backbone(nn.Module):
    def __init__(self, d_in: int, width: int, classes: int):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(d_in, width), nn.ReLU(),
                                  nn.Linear(width, width), nn.ReLU())
        self.head = nn.Linear(width, classes)

    def forward(self, x):
        return self.head(self.body(x))


def build_frozen_backbone(seed: int = 0) -> Case:
    """A pretrained-style backbone frozen; AdamW gets ``model.parameters()`` (all)."""
    model = _seeded(seed, lambda: Backbone(16, 128, 4))
    model.body.requires_grad_(False)
    x, y = _teacher(64, 16, 4, seed)
    return Case(model, x, y, targets=y, make_opt=adamw(1e-2, "all"), steps=40)


def build_zero_head(seed: int = 0) -> Case:
    model = _seeded(seed, lambda: Backbone(16, 64, 4))
    nn.init.zeros_(model.head.weight)
    nn.init.zeros_(model.head.bias)
    x, y = _teacher(64, 16, 4, seed)
    return Case(model, x, y, targets=y, make_opt=adamw(3e-3), steps=40)


def build_frozen_zero_head(seed: int = 0) -> Case:
    """Broken: the zero head is frozen too; nothing can ever learn."""
    case = build_zero_head(seed)
    case.model.head.requires_grad_(False)
    return case


class ScaledResidual(nn.Module):
    """x + scale * f(norm(x)): a per-channel layer scale (CaiT, DINOv2) or a scalar
    ReZero alpha (Bachlechner et al. 2020)."""

    def __init__(self, d: int, init: float, per_channel: bool):
        super().__init__()
        self.norm = nn.LayerNorm(d) if per_channel else nn.Identity()
        self.fc1, self.fc2 = nn.Linear(d, 2 * d), nn.Linear(2 * d, d)
        self.scale = nn.Parameter(torch.full((d,) if per_channel else (), init))

    def forward(self, x):
        return x + self.scale * self.fc2(F.gelu(self.fc1(self.norm(x))))


class ResidualNet(nn.Module):
    def __init__(self, d_in: int, d: int, classes: int, depth: int, init: float,
                 per_channel: bool):
        super().__init__()
        self.embed = nn.Linear(d_in, d)
        self.blocks = nn.Sequential(*[ScaledResidual(d, init, per_channel) for _ in range(depth)])
        self.head = nn.Linear(d, classes)

    def forward(self, x):
        return self.head(self.blocks(self.embed(x)))


def build_layer_scale(seed: int = 0) -> Case:
    model = _seeded(seed, lambda: ResidualNet(16, 64, 4, 4, 1e-6, per_channel=True))
    x, y = _teacher(64, 16, 4, seed)
    return Case(model, x, y, targets=y, make_opt=adamw(3e-3), steps=40)


def build_rezero(seed: int = 0) -> Case:
    model = _seeded(seed, lambda: ResidualNet(16, 64, 4, 4, 0.0, per_channel=False))
    x, y = _teacher(64, 16, 4, seed)
    return Case(model, x, y, targets=y, make_opt=adamw(3e-3), steps=40)


def build_dropout(seed: int = 0) -> Case:
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = nn.Sequential(nn.Linear(16, 128), nn.ReLU(), nn.Dropout(0.3),
                              nn.Linear(128, 128), nn.ReLU(), nn.Dropout(0.3),
                              nn.Linear(128, 4))
    x, y = _teacher(64, 16, 4, seed)
    return Case(model, x, y, targets=y, make_opt=adamw(3e-3), steps=40)


def build_imbalanced(seed: int = 0) -> Case:
    """A binary classifier for 5 % positives (the top 5 % of a linear teacher's score),
    one logit, its bias at the log prior log(p / (1 - p)); BCE with logits."""
    model = _mlp(16, 64, 1, 3, seed)
    g = _gen(seed)
    x = torch.randn(400, 16, generator=g)
    score = x @ torch.randn(16, generator=g)
    y = (score >= score.quantile(0.95)).float()[:, None]
    p = y.mean().item()
    with torch.no_grad():
        model[-1].bias.fill_(math.log(p / (1 - p)))
    return Case(model, x, y, loss=F.binary_cross_entropy_with_logits, targets=y.long()[:, 0],
                make_opt=adamw(3e-3), steps=60)


class MoE(nn.Module):
    """Top-1 routing to small expert MLPs; an expert runs only on the rows routed to it
    (as Mixtral's loop over experts does), scaled by its gate probability."""

    def __init__(self, d: int, experts: int):
        super().__init__()
        self.router = nn.Linear(d, experts)
        self.experts = nn.ModuleList(nn.Sequential(nn.Linear(d, 2 * d), nn.GELU(),
                                                   nn.Linear(2 * d, d)) for _ in range(experts))

    def forward(self, x):
        gate = self.router(x).softmax(-1)
        p, idx = gate.max(-1)
        out = torch.zeros_like(x)
        for e, expert in enumerate(self.experts):
            rows = (idx == e).nonzero().squeeze(1)
            if len(rows):
                out = out.index_add(0, rows, p[rows, None] * expert(x[rows]))
        return out


class MoENet(nn.Module):
    def __init__(self, d_in: int = 16, d: int = 32, experts: int = 4, classes: int = 4):
        super().__init__()
        self.embed = nn.Linear(d_in, d)
        self.norm = nn.LayerNorm(d)
        self.moe = MoE(d, experts)
        self.head = nn.Linear(d, classes)

    def forward(self, x):
        h = self.embed(x)
        return self.head(h + self.moe(self.norm(h)))


def build_moe(seed: int = 0) -> Case:
    model = _seeded(seed, MoENet)
    with torch.no_grad():                   # expert 3 gets no row of this batch
        model.moe.router.bias[3] = -10.0
    x, y = _teacher(64, 16, 4, seed)
    return Case(model, x, y, targets=y, make_opt=adamw(3e-3), steps=40)


class SparseEmbeddingNet(nn.Module):
    def __init__(self, vocab: int = 100, d: int = 32, classes: int = 4):
        super().__init__()
        self.emb = nn.Embedding(vocab, d, sparse=True)
        self.fc = nn.Linear(d, 64)
        self.head = nn.Linear(64, classes)

    def forward(self, ids):
        return self.head(F.relu(self.fc(self.emb(ids).mean(1))))


def _sparse_opts(model):
    return [torch.optim.SparseAdam(list(model.emb.parameters()), lr=1e-2),
            torch.optim.Adam(list(model.fc.parameters()) + list(model.head.parameters()),
                             lr=3e-3)]


def build_sparse_embedding(seed: int = 0) -> Case:
    model = _seeded(seed, SparseEmbeddingNet)
    g = _gen(seed)
    ids = torch.randint(0, 100, (64, 6), generator=g)
    y = torch.randint(0, 4, (64,), generator=g)
    return Case(model, ids, y, targets=y, make_opt=_sparse_opts, steps=40)


def build_fp16_scaled(seed: int = 0) -> Case:
    """A float16 MLP under a loss scale of 2**16 (GradScaler's initial scale): every
    gradient element is finite, two gradient norms exceed float16's 65504. It trains
    with SGD on the unscaled gradients (AdamW's eps 1e-8 is 0 in float16)."""
    model = _mlp(64, 1024, 10, 3, seed).half()
    g = _gen(seed)
    x = torch.randn(16, 64, generator=g).half()
    y = torch.randint(0, 10, (16,), generator=g)
    scale = 2.0 ** 16
    return Case(model, x, y, loss=lambda out, t: F.cross_entropy(out.float(), t) * scale,
                targets=y, make_opt=sgd(0.1), steps=20, loss_scale=scale)


# --- broken
def build_mlp_no_norm_x3(seed: int = 0) -> Case:
    """A 10-layer ReLU MLP with He-initialised weights times 3 and no normalisation."""
    model = _mlp(16, 64, 4, 10, seed)
    with torch.no_grad():
        for m in model:
            if isinstance(m, nn.Linear):
                nn.init.kaiming_normal_(m.weight, generator=_gen(seed))
                m.weight.mul_(3)
    x, y = _teacher(64, 16, 4, seed)
    return Case(model, x, y, targets=y, make_opt=adamw(1e-3), steps=40)


def build_sigmoid_deep(seed: int = 0) -> Case:
    model = _mlp(16, 64, 4, 12, seed, act=nn.Sigmoid)
    x, y = _teacher(64, 16, 4, seed)
    return Case(model, x, y, targets=y, make_opt=adamw(1e-3), steps=40)


class ConvNet(nn.Module):
    def __init__(self, channels: int = 20, classes: int = 10):
        super().__init__()
        self.conv = nn.Conv2d(3, channels, 3, padding=1)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(channels, 32, 3, padding=1)
        self.relu2 = nn.ReLU()
        self.fc = nn.Linear(32, classes)

    def forward(self, x):
        return self.fc(self.relu2(self.conv2(self.relu(self.conv(x)))).mean((2, 3)))


def build_dead_conv(seed: int = 0) -> Case:
    """18 of the first convolution's 20 channels have bias -10 before their ReLU."""
    model = _seeded(seed, ConvNet)
    with torch.no_grad():
        model.conv.bias[:18] = -10.0
    img, lab = _images(16, 16, 10, seed)
    return Case(model, img, lab, targets=lab, make_opt=adamw(1e-2), steps=60,
                info={"dead": 18 / 20})


def build_conv_net(seed: int = 0) -> Case:
    """The same ConvNet with its default biases (dead_conv's healthy twin)."""
    model = _seeded(seed, ConvNet)
    img, lab = _images(16, 16, 10, seed)
    return Case(model, img, lab, targets=lab, make_opt=adamw(1e-2), steps=60)


class DetachedBranch(nn.Module):
    """A two-branch MLP whose ``deep`` branch is detached inside forward (a bug)."""

    def __init__(self, d_in: int = 16, width: int = 64, classes: int = 4):
        super().__init__()
        self.deep = nn.Sequential(nn.Linear(d_in, width), nn.ReLU(), nn.Linear(width, width))
        self.skip = nn.Linear(d_in, width)
        self.head = nn.Linear(width, classes)

    def forward(self, x):
        return self.head(F.relu(self.deep(x).detach() + self.skip(x)))


def build_detached(seed: int = 0) -> Case:
    model = _seeded(seed, DetachedBranch)
    x, y = _teacher(64, 16, 4, seed)
    return Case(model, x, y, targets=y, make_opt=adamw(3e-3), steps=40)


def build_nan_param(seed: int = 0) -> Case:
    model = _mlp(16, 64, 4, 3, seed)
    with torch.no_grad():
        model[2].weight[5, 7] = float("nan")
    x, y = _teacher(64, 16, 4, seed)
    return Case(model, x, y, targets=y, make_opt=adamw(1e-3), steps=20,
                info={"param": "2.weight"})


def build_lr10(seed: int = 0) -> Case:
    model = _mlp(16, 64, 4, 4, seed)
    x, y = _teacher(64, 16, 4, seed)
    return Case(model, x, y, targets=y,
                make_opt=lambda m: torch.optim.SGD(m.parameters(), lr=10.0), steps=WATCH_STEPS)


HEALTHY: dict[str, Callable[[], Case]] = {
    "gpt2": build_gpt2, "bert": build_bert, "llama": build_llama, "vit": build_vit,
    "convnext": build_convnext, "resnet": build_resnet,
    "zero_init_residual": build_zero_init_residual, "lora": build_lora,
    "frozen_backbone": build_frozen_backbone, "zero_head": build_zero_head,
    "layer_scale": build_layer_scale, "rezero": build_rezero, "dropout": build_dropout,
    "eval_mode": build_eval_mode, "imbalanced": build_imbalanced, "moe": build_moe,
    "sparse_embedding": build_sparse_embedding, "gpt2_bf16": build_gpt2_bf16,
    "fp16_scaled": build_fp16_scaled, "conv_net": build_conv_net,
}
BROKEN: dict[str, Callable[[], Case]] = {
    "resnet_no_norm_x3": build_resnet_no_norm_x3, "mlp_no_norm_x3": build_mlp_no_norm_x3,
    "sigmoid_deep": build_sigmoid_deep, "gpt2_embed_x1000": build_gpt2_embed_x1000,
    "dead_conv": build_dead_conv, "detached": build_detached,
    "frozen_zero_head": build_frozen_zero_head, "nan_param": build_nan_param,
    "lr10": build_lr10,
}
ZOO = {**HEALTHY, **BROKEN}


@functools.lru_cache(maxsize=None)
def case(name: str) -> Case:
    """Each model is built once per session; nothing here mutates it."""
    return ZOO[name]()


# ---------------------------------------------------------------- ground truth
def _call(model: nn.Module, x: Any) -> Any:
    if isinstance(x, dict):
        return model(**x)
    if isinstance(x, (tuple, list)):
        return model(*x)
    return model(x)


def objective(c: Case, model: nn.Module) -> torch.Tensor:
    """The loss diagnose sees: the HF model's own, else ``c.loss`` (cross-entropy for
    integer targets by default)."""
    out = _call(model, c.x)
    if c.y is None:
        return out.loss
    return (c.loss or F.cross_entropy)(out, c.y)


def baseline(c: Case) -> float:
    """The loss of the best constant prediction: the entropy of the targets' label
    frequencies (an LM's next tokens)."""
    t = c.targets[:, 1:] if c.lm else c.targets
    p = torch.bincount(t.reshape(-1)).double()
    p = p[p > 0] / p.sum()
    return float(-(p * p.log()).sum())


@dataclass
class Trained:
    initial: float
    final: float
    baseline: float
    losses: list
    learns: bool
    diverges: bool
    moved: dict          # parameter name -> whether training changed it
    model: nn.Module     # the trained copy


def _as_list(opt):
    return opt if isinstance(opt, list) else [opt]


@functools.lru_cache(maxsize=None)
def trained(name: str) -> Trained:
    """Train a deep copy of the model of ``name`` on its batch (see the module docstring
    for the rule)."""
    c = case(name)
    model = copy.deepcopy(c.model)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opts = _as_list(c.make_opt(model))
    losses = []
    with torch.random.fork_rng():
        torch.manual_seed(0)
        for _ in range(c.steps):
            loss = objective(c, model)
            for o in opts:
                o.zero_grad()
            loss.backward()
            losses.append(loss.item() / c.loss_scale)
            if c.loss_scale != 1.0:
                for p in model.parameters():
                    if p.grad is not None:
                        p.grad.div_(c.loss_scale)
            for o in opts:
                o.step()
        with torch.no_grad():
            final = objective(c, model).item() / c.loss_scale
    losses.append(final)
    base = baseline(c)
    finite = all(math.isfinite(v) for v in losses)
    learns = finite and final <= LEARNS_FACTOR * min(losses[0], base)
    diverges = not finite or final > DIVERGES_FACTOR * losses[0]
    moved = {n: not torch.equal(before[n], p.detach()) for n, p in model.named_parameters()}
    return Trained(losses[0], final, base, losses, learns, diverges, moved, model)


def _ground_truth(t: Trained) -> str:
    return (f"loss {t.initial:.4g} -> {t.final:.4g} (best constant {t.baseline:.4g}); "
            f"learns={t.learns} diverges={t.diverges}")


# ----------------------------------------------------------------------- helpers
def _show(report) -> str:
    return " | ".join(map(str, report.findings)) or "no finding"


def _diagnose(name: str, optimizer=None):
    c = case(name)
    return diagnose(c.model, c.x, c.y, loss=c.loss, optimizer=optimizer)


def _watched(name: str, steps: int = WATCH_STEPS, every: int = 5):
    """The report of ``watch`` over ``steps`` training steps of a fresh copy (its first
    optimizer watched, every loss logged)."""
    c = case(name)
    model = copy.deepcopy(c.model)
    opts = _as_list(c.make_opt(model))
    with torch.random.fork_rng():
        torch.manual_seed(0)
        with watch(model, opts[0], every=every) as w:
            for _ in range(steps):
                loss = objective(c, model)
                for o in opts:
                    o.zero_grad()
                loss.backward()
                for o in opts:
                    o.step()
                w.log(loss.item() / c.loss_scale)
    return w.report()


def _notes(report) -> set:
    return {n.symptom for n in report.notes}


# The optimizer passed to diagnose: AdamW (lr 1e-3) on the parameters the case trains.
# Left out: the sparse embedding (AdamW takes no sparse gradient; its two optimizers are
# tested below), the float16 MLP (its gradients are 2**16 times the true ones, so a
# copied step says nothing; and AdamW's eps 1e-8 is 0 in float16) and the bfloat16
# GPT-2, whose LayerNorm gains cannot move at lr 1e-3 (tested below).
WITH_ADAMW = [n for n in HEALTHY if n not in ("sparse_embedding", "fp16_scaled", "gpt2_bf16")]
WATCHED = ["gpt2", "vit", "zero_init_residual", "lora", "layer_scale", "moe"]
# Deliberate designs and the notes they must give (severity "info", never a finding).
NOTES = {"gpt2": {"tied"}, "gpt2_bf16": {"tied"}, "lora": {"frozen"},
         "frozen_backbone": {"frozen"}, "zero_head": {"gated"}, "rezero": {"gated"},
         "zero_init_residual": {"gated"}, "moe": {"not_called"}}


# --------------------------------------------------------------- 1. ground truth
@pytest.mark.parametrize("name", list(HEALTHY))
def test_healthy_model_learns(name):
    t = trained(name)
    assert t.learns, _ground_truth(t)


@pytest.mark.parametrize("name", list(BROKEN))
def test_broken_model_is_harmed(name):
    """Reference: the broken model does not learn or diverges, except the detached
    branch, which learns through its skip path while the branch never moves."""
    t = trained(name)
    if name == "detached":
        deep = [n for n in t.moved if n.startswith("deep.")]
        assert deep and not any(t.moved[n] for n in deep), t.moved
        assert t.moved["skip.weight"] and t.learns, _ground_truth(t)
    elif name in ("resnet_no_norm_x3", "nan_param", "lr10"):
        assert t.diverges, _ground_truth(t)
    else:
        assert not t.learns and not t.diverges, _ground_truth(t)


def test_broken_models_healthy_twins_learn_with_the_same_optimizer():
    """The same training (optimizer, lr, steps, batch) fits the unbroken model."""
    for broken, twin in (("resnet_no_norm_x3", "resnet"), ("dead_conv", "conv_net"),
                         ("gpt2_embed_x1000", "gpt2"), ("frozen_zero_head", "zero_head")):
        assert trained(twin).learns and not trained(broken).learns, (broken, twin)


def test_dead_channels_stay_dead_through_training():
    """Reference: the first convolution's output, per channel, max over the batch and
    the positions, after training: 18 of 20 channels never positive."""
    c, t = case("dead_conv"), trained("dead_conv")
    with torch.no_grad():
        alive = t.model.conv(c.x).amax((0, 2, 3)) > 0
    assert alive.tolist() == [False] * 18 + [True] * 2


def test_frozen_zero_head_keeps_the_loss_at_log_c():
    t = trained("frozen_zero_head")
    assert t.initial == pytest.approx(math.log(4), abs=1e-6)
    assert t.final == pytest.approx(math.log(4), abs=1e-6)


def test_fp16_gradients_are_finite_but_their_norms_overflow():
    """Reference: a backward pass on a copy; elementwise ``isfinite`` of every gradient
    and ``Tensor.norm()`` in float16."""
    c = case("fp16_scaled")
    model = copy.deepcopy(c.model)
    objective(c, model).backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g.dtype == torch.float16 and torch.isfinite(g).all() for g in grads)
    assert sum(not torch.isfinite(g.norm()) for g in grads) >= 2


def test_moe_routes_no_example_to_expert_3():
    model = case("moe").model
    with torch.no_grad():
        idx = model.moe.router(model.norm(model.embed(case("moe").x))).argmax(-1)
    assert 3 not in idx.tolist() and {0, 1, 2} & set(idx.tolist())


# ------------------------------------------------------------ 2. healthy models
@pytest.mark.parametrize("name", list(HEALTHY))
def test_healthy_model_gives_no_finding(name):
    assert trained(name).learns
    report = _diagnose(name)
    assert report.findings == [], f"{name}: {_show(report)}"


@pytest.mark.parametrize("name", WITH_ADAMW)
def test_healthy_model_with_adamw_gives_no_finding(name):
    assert trained(name).learns
    c = case(name)
    report = _diagnose(name, adamw(1e-3, c.params)(c.model))
    assert report.findings == [], f"{name}: {_show(report)}"


@pytest.mark.parametrize("name", WATCHED)
def test_healthy_model_under_watch_gives_no_finding(name):
    assert trained(name).learns
    report = _watched(name)
    assert report.findings == [], f"{name}: {_show(report)}"


@pytest.mark.parametrize("name", list(NOTES))
def test_deliberate_designs_are_notes(name):
    report = _diagnose(name)
    assert NOTES[name] <= _notes(report), [str(n) for n in report.notes]
    assert all(n.severity == "info" for n in report.notes)


def test_bf16_layer_norm_gains_that_cannot_move_are_found():
    """bfloat16 keeps 8 significant bits: 1 +- 1e-3 rounds back to 1, so one AdamW step
    at lr 1e-3 (about lr per element) leaves every LayerNorm gain (all ones) as it was.
    Reference: one step on a copy, ``torch.equal`` of each weight before and after; the
    layers whose weight did not move are those of the update_ratio finding."""
    c = case("gpt2_bf16")
    model = copy.deepcopy(c.model)
    opt = adamw(1e-3)(model)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    with torch.random.fork_rng():
        objective(c, model).backward()
    opt.step()
    stuck = {n.rsplit(".", 1)[0] for n, p in model.named_parameters()
             if n.endswith(".weight") and torch.equal(before[n], p.detach())}
    assert stuck == {"transformer.h.0.ln_1", "transformer.h.0.ln_2", "transformer.h.1.ln_1",
                     "transformer.h.1.ln_2", "transformer.ln_f"}
    report = _diagnose("gpt2_bf16", adamw(1e-3)(c.model))
    assert report.symptoms == ["precision"], _show(report)
    assert report.findings[0].cause == "rounding", str(report.findings[0])
    assert set(report.findings[0].layers) == stuck, str(report.findings[0])


def test_sparse_embedding_with_one_of_its_two_optimizers():
    """Given only the dense Adam, the sparse embedding is a trainable parameter outside
    the optimizer: that, and nothing else, is found."""
    c = case("sparse_embedding")
    report = _diagnose("sparse_embedding", _sparse_opts(c.model)[1])
    assert report.symptoms == ["not_in_optimizer"], _show(report)
    f = report.findings[0]
    assert "emb" in f.evidence or any("emb" in layer for layer in f.layers), str(f)


@pytest.mark.parametrize("name", ["bert", "vit", "gpt2"])
def test_hf_model_loss_is_its_own_or_cross_entropy_on_logits(name):
    """Reference: the model's own ``.loss`` (labels in x), and ``F.cross_entropy`` on
    ``.logits`` (class dimension last) for ``y`` passed separately; on an eval-mode copy
    (no dropout, so both passes are the same function)."""
    c = case(name)
    model = copy.deepcopy(c.model).eval()
    inputs = {k: v for k, v in c.x.items() if k != "labels"}
    labels = c.x["labels"]
    with torch.no_grad():
        own = model(**c.x).loss.item()
        logits = model(**inputs).logits
        ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1)).item()
    with_labels = diagnose(model, c.x)
    with_y = diagnose(model, inputs, labels)
    assert with_labels.loss == pytest.approx(own, rel=1e-5)
    assert with_y.loss == pytest.approx(ce, rel=1e-5)
    assert with_labels.findings == [] and with_y.findings == [], (
        _show(with_labels), _show(with_y))


# ------------------------------------------------------------- 3. broken models
@pytest.mark.parametrize("name, symptoms", [
    ("resnet_no_norm_x3", {"exploding", "nonfinite"}),
    ("mlp_no_norm_x3", {"exploding", "nonfinite"}),
    ("sigmoid_deep", {"vanishing"}),
    ("gpt2_embed_x1000", {"initial_loss"}),
])
def test_broken_model_shows_its_symptom(name, symptoms):
    t = trained(name)
    assert not t.learns, _ground_truth(t)
    report = _diagnose(name)
    assert symptoms & set(report.symptoms), f"{name}: {_show(report)}"


def test_dead_biases_are_found_per_channel():
    assert not trained("dead_conv").learns
    report = _diagnose("dead_conv")
    found = [f for f in report.findings if f.symptom == "dead_units"]
    assert len(found) == 1, _show(report)
    f = found[0]
    assert "90%" in f.evidence, str(f)
    assert f.layers and not any("2" in layer for layer in f.layers), str(f)   # not relu2


def test_detached_branch_is_a_cut_graph():
    t = trained("detached")
    assert not t.moved["deep.0.weight"]
    report = _diagnose("detached")
    found = [f for f in report.findings if f.symptom == "no_gradient"]
    assert len(found) == 1, _show(report)
    f = found[0]
    assert f.cause == "cut_graph", str(f)
    assert f.layers and all(layer.startswith("deep") for layer in f.layers), str(f)
    assert f.severity in ("warning", "error")


def test_frozen_zero_head_is_named():
    assert not trained("frozen_zero_head").learns
    report = _diagnose("frozen_zero_head")
    named = [f for f in report.findings if "head.weight" in f.evidence]
    assert named and named[0].cause == "frozen_zero", _show(report)


def test_nan_parameter_is_nonfinite_and_named():
    assert trained("nan_param").diverges
    report = _diagnose("nan_param")
    found = [f for f in report.findings if f.symptom == "nonfinite"]
    assert found and found[0].severity == "error", _show(report)
    assert "2.weight" in found[0].evidence, str(found[0])


def test_lr_10_under_watch_diverges():
    assert trained("lr10").diverges
    report = _watched("lr10", every=5)
    assert "diverged" in report.symptoms, _show(report)
