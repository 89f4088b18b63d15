"""Packet analysis: pcap files (:mod:`.pcap`) and the scapy layer (:mod:`.scapy_dmsc`) for
DMSC captures (draft-dmsc-protocol-00, Sections 4-7 and 9)."""
