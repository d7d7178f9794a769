"""Lesions as masks: growing a lesion from a seed point (`growing`, main paper "Automated
lesion growing"), reading seed files (`seeds`), and turning detections into masks on an
image grid (`masks`)."""
