"""code2lora: the console entry point that ties the service, hypernet and training layers together."""
