import streamlit as st
st.title("Circuit")
