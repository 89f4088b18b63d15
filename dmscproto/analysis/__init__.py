"""Packet analysis: pcap files, the scapy layer, decoders (draft-dmsc-protocol-00, App. B)."""
