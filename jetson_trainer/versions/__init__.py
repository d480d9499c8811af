"""jetson_trainer/versions"""
