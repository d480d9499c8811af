"""jetson_trainer/historian"""
