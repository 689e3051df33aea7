"""The rules, sans-IO: bytes, a clock value and key sets in; values or errors out.

Never imports network, file, database, process, thread or event-loop modules
(``tests/test_layering.py`` enforces it); state arrives through the ports in
:mod:`protocol.ports`. Modules: ``errors``, ``identity``, ``canonical``,
``model``, ``chain``, ``transcript``, ``audit``, ``replay``, ``directory``,
``capsule``, ``handoff``, ``pii``, ``bundle``, ``decision``, ``lifecycle``,
``ports``.
"""
