"""pi_edge/intake"""
