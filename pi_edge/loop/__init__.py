"""pi_edge/loop"""
