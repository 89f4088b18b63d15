"""Operating a gateway (draft-dmsc-yang-00): its counters (:mod:`.metrics`, always
importable, cheap per PDU), its live state as RFC 7951 JSON of the ``ietf-dmsc`` module
(:mod:`.state`), the Prometheus exposition (:mod:`.prometheus`) and the management
listener serving both over HTTPS with mutual TLS (:mod:`.server`; the last two need
``pip install 'dmscproto[management]'``)."""
