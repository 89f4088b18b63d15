"""The endpoint contract (interop/README.md): how the runner starts an implementation for a
role and a test case, and what the endpoint owes it.  The one source of the names and
numbers the runner, the adapter and the README share."""

from __future__ import annotations

from enum import StrEnum


class Role(StrEnum):
    """What an endpoint plays in a test case."""

    AGENT = "agent"
    GATEWAY = "gateway"
    PEER_GATEWAY = "peer-gateway"
    DECODER = "decoder"


class Party(StrEnum):
    """An agent endpoint's part in a test case (``DMSC_PARTY``)."""

    #: Registers ``DMSC_SKILL``, creates ``DMSC_READY``, answers every ROUTE_REQUEST
    #: with :data:`REPLY_PREFIX` + payload until SIGTERM, then deregisters and exits 0.
    SERVER = "server"
    #: Does what the test case asks and exits 0 (done), 1 (failed) or 127.
    CLIENT = "client"


# --- exit statuses -------------------------------------------------------------------------
EXIT_PASSED = 0
EXIT_FAILED = 1
EXIT_UNSUPPORTED = 127

# --- environment variables -----------------------------------------------------------------
ROLE = "DMSC_ROLE"                  # agent | gateway | peer-gateway | decoder
TESTCASE = "DMSC_TESTCASE"          # the scenario's name (README: "Test cases")
TRANSPORT = "DMSC_TRANSPORT"        # quic | dtls | udp (lab mode, cleartext)
LOGDIR = "DMSC_LOGDIR"              # an existing directory for the endpoint's logs/outputs
KEYLOG = "DMSC_KEYLOG"              # file to append TLS secrets to (NSS key log format)
READY = "DMSC_READY"                # file to create once ready (gateways, server agents)
DOMAIN = "DMSC_DOMAIN"              # the endpoint's domain
NAME = "DMSC_NAME"                  # the endpoint's name (its certificate's)
CERT = "DMSC_CERT"                  # its certificate (PEM), issued by the run's authority
KEY = "DMSC_KEY"                    # its private key (PEM)
CA = "DMSC_CA"                      # the authority certificate of its domain (PEM)
LISTEN = "DMSC_LISTEN"              # gateways: host:port to listen on (UDP)
PEER = "DMSC_PEER"                  # peer-gateway: host:port of the gateway to dial
PEER_DOMAIN = "DMSC_PEER_DOMAIN"    # gateways in peering cases: the other gateway's domain
PEER_CA = "DMSC_PEER_CA"            # ... and its authority certificate
HOLD_TIME = "DMSC_HOLD_TIME"        # gateways: the hold time to offer in OPEN (seconds)
MIN_LEASE = "DMSC_MIN_LEASE"        # gateways: grant leases as short as this (seconds)
GATEWAY = "DMSC_GATEWAY"            # agents: host:port of the home gateway
PARTY = "DMSC_PARTY"                # agents: server | client
SKILL = "DMSC_SKILL"                # agents: the skill servers register, clients look for
TARGET_DOMAIN = "DMSC_TARGET_DOMAIN"  # agents: the domain of the client's target

# --- values the runner passes and checks -----------------------------------------------------
#: What a server agent answers a ROUTE_REQUEST with: this prefix, then the payload.
REPLY_PREFIX = b"interop:"
#: The lease a lease-expiry client asks for (seconds); gateways must grant it.
SHORT_LEASE = 3
#: The hold time the gateways are given (seconds): KEEPALIVE every third of it.
INTEROP_HOLD_TIME = 6
