"""pi_edge/model"""
