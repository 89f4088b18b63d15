"""The A2A bridge (draft-dmsc-a2a-00): A2A agents and clients in a DMSC federation.

* :mod:`.mapping`: Agent Card <-> capability record, message parts <-> payload,
  A2A errors <-> DMSC error codes;
* :mod:`.bridge`: the serving side, an A2A agent card and JSON-RPC endpoint for every
  agent the bridge can route to, and a discovery endpoint (``dmsc a2a serve``);
* :mod:`.proxy`: the importing side, a DMSC agent standing for an A2A agent
  (``dmsc a2a import``).

A layer above the agent SDK and the runtime: nothing below imports it.  It needs the
``a2a`` extra (``pip install 'dmscproto[a2a]'``: a2a-sdk 1.3 and uvicorn).
"""

from ..errors import require_extra

require_extra("a2a.types", "a2a", "the A2A bridge", "a2a-sdk")
require_extra("uvicorn", "a2a", "the A2A bridge", "uvicorn")
