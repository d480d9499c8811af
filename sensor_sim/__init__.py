"""sensor_sim"""
