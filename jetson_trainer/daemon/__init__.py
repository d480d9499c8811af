"""jetson_trainer.daemon."""
