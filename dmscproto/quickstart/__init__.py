"""A working single-domain setup in a directory, as ``dmsc init DIR`` writes it.

    DIR/ca/                 the domain authority (dmsc authority): ca.pem, ca.key,
                            crl.pem, and issued/ with every certificate and key
    DIR/gateway.toml        the gateway (dmsc gateway --config gateway.toml)
    DIR/hello.toml          an agent serving the skill "greet" (dmsc agent --config)
    DIR/client.toml         another agent, to discover and call it
    DIR/hello_agent.py      the same two agents written with the SDK
    DIR/call_agent.py       (python hello_agent.py hello.toml, ...)
    DIR/.gitignore          "*": private keys never end up in a repository

The two agents have distinct identities (``dmsc://DOMAIN/hello`` and
``dmsc://DOMAIN/client``): two processes registering one identity take the
registration from each other (Section 5.1).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from ..security.authority_store import AuthorityStore
from ..security.ca import Kind

#: The files copied next to the configuration (this package's SDK examples).
SCRIPTS = ("hello_agent.py", "call_agent.py")
#: The agents written, with the skills their file lists.
AGENTS = {"hello": ("greet",), "client": ()}
#: The gateway's name (its certificate's).
GATEWAY = "gw"

_GATEWAY_TOML = """\
# The gateway of {domain}, written by `dmsc init`.  Run it:
#   dmsc gateway --config gateway.toml
# Every key is described in dmscproto/host/config.py; paths are relative to this file.

[gateway]
domain = "{domain}"
listen = "{host}:{port}"
certificate = "ca/issued/{gateway}.pem"
key = "ca/issued/{gateway}.key"
trust_anchors = ["ca/ca.pem"]
store = "{gateway}.sqlite"          # the registry: one file per gateway (locked while it runs)
require_tokens = false   # true: agents send access tokens (dmsc authority token, --token)

[limits]
min_lease = 30
max_lease = 86400
hold_time = 90

[log]
format = "text"        # "json": one JSON object per line
level = "info"

[security]
crl = ["ca/crl.pem"]   # the authority's CRL (dmsc authority crl ca), or its https:// URL

# Federation with another domain: see examples/gateway-a.toml in the repository.
"""

_AGENT_TOML = """\
# The agent dmsc://{domain}/{name}, written by `dmsc init`:
#   dmsc agent --config {name}.toml{serve}
# Every key is described in dmscproto/host/config.py; paths are relative to this file.

[agent]
certificate = "ca/issued/{name}.pem"
key = "ca/issued/{name}.key"
trust_anchors = ["ca/ca.pem"]
gateway = "{host}:{port}"
skills = {skills}
lease = 300
"""


def write(directory: str | Path, *, domain: str, host: str, port: int) -> list[Path]:
    """Write the setup (module docstring) into ``directory``, which must be empty or
    absent; returns the files written at its top.  ValueError if it is not empty."""
    root = Path(directory)
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise ValueError(f"{root} is not an empty directory")
    root.mkdir(parents=True, exist_ok=True)
    (root / ".gitignore").write_text("# keys and registry: keep out of any repository\n*\n")
    store = AuthorityStore.init(root / "ca", domain)
    store.issue(GATEWAY, Kind.GATEWAY)
    written = [root / "gateway.toml"]
    written[0].write_text(_GATEWAY_TOML.format(domain=domain, host=host, port=port,
                                               gateway=GATEWAY))
    for name, skills in AGENTS.items():
        store.issue(name, Kind.AGENT)
        path = root / f"{name}.toml"
        path.write_text(_AGENT_TOML.format(
            domain=domain, name=name, host=host, port=port,
            skills="[" + ", ".join(f'"{s}"' for s in skills) + "]",
            serve="            (serves its skills until Ctrl-C)" if skills else
            " --call greet --payload bob"))
        written.append(path)
    here = Path(__file__).parent
    for script in SCRIPTS:
        written.append(Path(shutil.copy(here / script, root / script)))
    return written
