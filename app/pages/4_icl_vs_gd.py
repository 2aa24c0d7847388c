import streamlit as st
st.title("ICL vs GD")
