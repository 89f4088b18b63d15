"""DMSC security (draft-dmsc-protocol-00, Section 10).

:mod:`.ca` domain authorities, certificates and identities (3.2, 10.2);
:mod:`.revocation` CRLs (10.2); :mod:`.signing` record signatures (7.2.1);
:mod:`.proof` the checks on registration requests (5.1); :mod:`.replay` freshness and
replay (10.4); :mod:`.tokens` and :mod:`.token_server` access tokens (10.3);
:mod:`.federation` cross-domain trust (10.5, 10.6); :mod:`.guard` a gateway's security
hooks; :mod:`.authority_store` a domain authority's directory; :mod:`.errors` the
error every check raises.
"""
