"""pi_edge/report"""
