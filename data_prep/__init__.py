"""Scripts that turn public sources into optical's bitext and retrieval formats.

Every module runs as ``python -m data_prep.<module> --help``:

- :mod:`data_prep.libreoffice_help` — LibreOffice help pages (Debian packages) → bitext
  split by page + a WikiCLIR-style BEIR retrieval set, fully offline;
- :mod:`data_prep.gettext_mo` — gettext ``.mo`` catalogues → bitext;
- :mod:`data_prep.download` — OPUS-100, Tatoeba, TED2020, FLORES-200 via ``datasets``
  (needs a network);
- :mod:`data_prep.clean` — the cleaning every source goes through.

Bitext is written as UTF-8 TSV, ``english<TAB>other``, one pair a line.
"""
