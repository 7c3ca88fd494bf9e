"""Tiny models built offline from configs (2 layers, hidden 32) for tests, and a CLI-error check.

Every builder writes a folder that loads exactly like a hub model would
(``AutoModel.from_pretrained(folder)`` / ``SentenceTransformer(folder)``), so the code
under test takes the same path as for real models. Nothing here touches the network.
"""

from __future__ import annotations

from pathlib import Path

import torch

FIXTURES = Path(__file__).parent / "fixtures"
VOCAB = FIXTURES / "vocab.txt"
BITEXT_VI = FIXTURES / "bitext_vi.tsv"


def _tokenizer():
    from transformers import BertTokenizerFast

    # strip_accents=False: Vietnamese diacritics must survive lower-casing.
    vocab = {tok: i for i, tok in enumerate(VOCAB.read_text(encoding="utf-8").split("\n")) if tok}
    return BertTokenizerFast(vocab=vocab, do_lower_case=True, strip_accents=False,
                             model_max_length=64)


def _bert_config(hidden: int = 32, **extra):
    from transformers import BertConfig

    vocab_size = sum(1 for _ in VOCAB.open(encoding="utf-8"))
    return BertConfig(vocab_size=vocab_size, hidden_size=hidden, num_hidden_layers=2,
                      num_attention_heads=2, intermediate_size=2 * hidden,
                      max_position_embeddings=128, **extra)


def build_hf_encoder(out: Path, hidden: int = 32, seed: int = 0) -> Path:
    """A plain Hugging Face BERT encoder folder (model + tokenizer)."""
    from transformers import BertModel

    torch.manual_seed(seed)
    BertModel(_bert_config(hidden)).save_pretrained(out)
    _tokenizer().save_pretrained(out)
    return out


def build_sentence_transformer(out: Path, hidden: int = 32, seed: int = 0) -> Path:
    """A sentence-transformers folder: BERT → mean pooling → normalize."""
    from sentence_transformers import SentenceTransformer

    from optical.models.student import st_modules

    models = st_modules()

    hf = build_hf_encoder(out / "_hf", hidden=hidden, seed=seed)
    word = models.Transformer(str(hf), max_seq_length=64)
    pool = models.Pooling(word.get_embedding_dimension(), pooling_mode="mean")
    SentenceTransformer(modules=[word, pool, models.Normalize()]).save(str(out))
    return out


def build_cross_encoder(out: Path, hidden: int = 32, seed: int = 0) -> Path:
    """A sequence-classification BERT (a cross-encoder) folder."""
    from transformers import BertForSequenceClassification

    torch.manual_seed(seed)
    BertForSequenceClassification(_bert_config(hidden, num_labels=1)).save_pretrained(out)
    _tokenizer().save_pretrained(out)
    return out


def build_clip(out: Path, hidden: int = 32, projection_dim: int = 16, seed: int = 0) -> Path:
    """A CLIP model (text and vision towers) with a WordPiece tokenizer and an image processor.

    The text tower pools at the first [SEP] (its eos token), as real CLIP pools at <|endoftext|>.
    """
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    tok = _tokenizer()
    vocab_size = len(tok)
    text = dict(vocab_size=vocab_size, hidden_size=hidden, intermediate_size=2 * hidden,
                num_hidden_layers=2, num_attention_heads=2, max_position_embeddings=64,
                eos_token_id=tok.sep_token_id, bos_token_id=tok.cls_token_id,
                pad_token_id=tok.pad_token_id)
    vision = dict(hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=2,
                  num_attention_heads=2, image_size=32, patch_size=8)
    torch.manual_seed(seed)
    config = CLIPConfig(text_config=text, vision_config=vision, projection_dim=projection_dim)
    CLIPModel(config).save_pretrained(out)
    tok.save_pretrained(out)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(out)
    return out


def one_error_line(result, *parts):
    """The CLI `result` failed with exit code 2 and one line `error: ...` holding every part;
    returns that line."""
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error: "), result.output
    for part in parts:
        assert part in lines[0], lines[0]
    return lines[0]
