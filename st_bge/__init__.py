"""st-bge: fine-tune BGE embedding models for a retrieval domain, the sentence-transformers way.

The stages, one module each: `config` (recipes) -> `data` -> `modeling` (+ LoRA) -> `losses` -> `training`
(SentenceTransformerTrainer) -> `evaluation` (ranx) -> `model_card`.
"""

__version__ = "0.1.0.dev0"
