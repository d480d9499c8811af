"""jetson_trainer.build."""
