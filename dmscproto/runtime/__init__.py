"""Network runtime (DESIGN.md layers 3-5): asyncio glue that drives the sans-I/O gateway
node and agent client over real transports (:mod:`.pump`), the gateway process
(:mod:`.gateway`), its configuration file (:mod:`.config`) and structured logs
(:mod:`.logs`)."""
