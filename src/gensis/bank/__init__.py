"""The augmentation bank (paper Sec. 9.5.2): generative and interpolated augmentations of every image, generated
once by the E-LDM and read from disk during Gen-DINO training. Format and semantics: ``docs/bank.md``.

Public API
    BankReader(path)                                   random access for training (``reader.py``)
    generate_bank(cfg, data, out, eldm=...) -> BankResult  ``gensis bank generate`` (``generate.py``)
    verify_bank(path, decode=False) -> VerifyReport    ``gensis bank verify`` (``verify.py``)
    show_bank(path, out_png, n=6)                      ``gensis bank show`` (``show.py``)
"""

from gensis.bank.generate import BankResult, generate_bank, load_generator
from gensis.bank.reader import BankReader
from gensis.bank.show import show_bank
from gensis.bank.verify import VerifyReport, verify_bank

__all__ = ["BankReader", "BankResult", "VerifyReport", "generate_bank", "load_generator", "show_bank", "verify_bank"]
